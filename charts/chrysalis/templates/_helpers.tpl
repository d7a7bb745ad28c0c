{{/* Name of the chart's objects: the release name, with "chrysalis" unless the release name has it already. */}}
{{- define "chrysalis.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "chrysalis.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "chrysalis.labels" -}}
{{ include "chrysalis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "chrysalis.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The CRI socket must live in run_dir: the DaemonSet mounts run_dir from the host, and only that. */}}
{{- define "chrysalis.socket" -}}
{{- $socket := required "config.socket is required" .Values.config.socket -}}
{{- $runDir := required "config.run_dir is required" .Values.config.run_dir | trimSuffix "/" -}}
{{- if not (hasPrefix (printf "%s/" $runDir) $socket) -}}
{{- fail (printf "config.socket (%s) must be inside config.run_dir (%s): the DaemonSet mounts only run_dir from the host" $socket $runDir) -}}
{{- end -}}
{{- $socket -}}
{{- end -}}

{{- define "chrysalis.chrysctl" -}}
{{- printf "%s/build/cri/chrysctl" (trimSuffix "/" .Values.bundleDir) -}}
{{- end -}}
