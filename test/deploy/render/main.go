// chart-render renders a Helm 3 chart the way `helm template` does, for tests on machines without Helm:
// Go text/template with the sprig functions plus Helm's own (include, tpl, required, toYaml, fromYaml,
// toJson, lookup), the .Values/.Release/.Chart/.Capabilities/.Files/.Template objects, values merged
// from values.yaml, -f files and --set overrides, and values.schema.json validation (a JSON Schema subset).
//
// Usage: chart-render [--name NAME] [--namespace NS] [-f values.yaml]... [--set k=v]... [--set-string k=v]...
//
//	[--notes] CHART_DIR
//
// Writes every rendered manifest as a YAML document headed "# Source: <chart>/templates/<file>" to stdout.
// Errors go to stderr with exit status 1.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	sprig "github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v3"
)

type multiFlag []string

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	releaseName := "chrysalis"
	namespace := "default"
	var valueFiles, sets, setStrings multiFlag
	notes := false
	chartDir := ""
	for i := 0; i < len(args); i++ {
		arg := args[i]
		next := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", arg)
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		switch arg {
		case "--name":
			releaseName, err = next()
		case "--namespace", "-n":
			namespace, err = next()
		case "-f", "--values":
			v, err = next()
			valueFiles = append(valueFiles, v)
		case "--set":
			v, err = next()
			sets = append(sets, v)
		case "--set-string":
			v, err = next()
			setStrings = append(setStrings, v)
		case "--notes":
			notes = true
		default:
			if strings.HasPrefix(arg, "-") {
				return fmt.Errorf("unknown flag %q", arg)
			}
			if chartDir != "" {
				return fmt.Errorf("more than one chart directory given: %q and %q", chartDir, arg)
			}
			chartDir = arg
		}
		if err != nil {
			return err
		}
	}
	if chartDir == "" {
		return fmt.Errorf("usage: chart-render [--name NAME] [--namespace NS] [-f FILE]... [--set k=v]... [--notes] CHART_DIR")
	}

	chart, err := loadChartMeta(chartDir)
	if err != nil {
		return err
	}
	values, err := loadYAMLMap(filepath.Join(chartDir, "values.yaml"), true)
	if err != nil {
		return err
	}
	for _, f := range valueFiles {
		override, err := loadYAMLMap(f, false)
		if err != nil {
			return err
		}
		values = mergeValues(values, override)
	}
	for _, s := range sets {
		if err := applySet(values, s, false); err != nil {
			return fmt.Errorf("failed parsing --set data: %v", err)
		}
	}
	for _, s := range setStrings {
		if err := applySet(values, s, true); err != nil {
			return fmt.Errorf("failed parsing --set-string data: %v", err)
		}
	}
	if err := validateSchemaFile(chartDir, chart["Name"].(string), values); err != nil {
		return err
	}

	out, err := render(chartDir, chart, values, releaseName, namespace, notes)
	if err != nil {
		return err
	}
	_, err = os.Stdout.WriteString(out)
	return err
}

// loadChartMeta reads Chart.yaml into the capitalised fields templates see as .Chart.
func loadChartMeta(chartDir string) (map[string]interface{}, error) {
	raw, err := loadYAMLMap(filepath.Join(chartDir, "Chart.yaml"), false)
	if err != nil {
		return nil, err
	}
	for _, key := range []string{"apiVersion", "name", "version"} {
		if _, ok := raw[key]; !ok {
			return nil, fmt.Errorf("Chart.yaml: %q is required", key)
		}
	}
	if raw["apiVersion"] != "v2" {
		return nil, fmt.Errorf("Chart.yaml: apiVersion must be v2 (Helm 3), got %v", raw["apiVersion"])
	}
	chart := map[string]interface{}{}
	for key, value := range raw {
		chart[strings.ToUpper(key[:1])+key[1:]] = value
	}
	for _, key := range []string{"AppVersion", "Description", "Type", "KubeVersion"} {
		if _, ok := chart[key]; !ok {
			chart[key] = ""
		}
	}
	if _, ok := chart["Name"].(string); !ok {
		return nil, fmt.Errorf("Chart.yaml: name must be a string")
	}
	return chart, nil
}

func loadYAMLMap(file string, optional bool) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		if optional && os.IsNotExist(err) {
			return map[string]interface{}{}, nil
		}
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	if out == nil {
		out = map[string]interface{}{}
	}
	return out, nil
}

// mergeValues merges override into base the way Helm coalesces values: maps merge key by key, anything else
// replaces, and a null override deletes the key.
func mergeValues(base, override map[string]interface{}) map[string]interface{} {
	for key, value := range override {
		if value == nil {
			delete(base, key)
			continue
		}
		if overrideMap, ok := value.(map[string]interface{}); ok {
			if baseMap, ok := base[key].(map[string]interface{}); ok {
				base[key] = mergeValues(baseMap, overrideMap)
				continue
			}
		}
		base[key] = value
	}
	return base
}

// --- templates ---

type files struct {
	root string
}

// Get returns a chart file's content, or "" when it does not exist, as Helm's .Files.Get does.
func (f files) Get(name string) string {
	data, err := os.ReadFile(filepath.Join(f.root, filepath.FromSlash(name)))
	if err != nil {
		return ""
	}
	return string(data)
}

type apiVersions []string

func (a apiVersions) Has(version string) bool {
	for _, v := range a {
		if v == version {
			return true
		}
	}
	return false
}

func toYAML(v interface{}) string {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func render(chartDir string, chart, values map[string]interface{}, releaseName, namespace string,
	notes bool) (string, error) {
	chartName := chart["Name"].(string)
	templateDir := filepath.Join(chartDir, "templates")
	entries, err := os.ReadDir(templateDir)
	if err != nil {
		return "", err
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)

	top := template.New("gotpl").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	includeDepth := 0
	funcs["include"] = func(name string, data interface{}) (string, error) {
		includeDepth++
		defer func() { includeDepth-- }()
		if includeDepth > 100 {
			return "", fmt.Errorf("include %q: nested too deep", name)
		}
		var buf bytes.Buffer
		if err := top.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := top.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["required"] = func(message string, value interface{}) (interface{}, error) {
		if value == nil {
			return nil, fmt.Errorf("%s", message)
		}
		if s, ok := value.(string); ok && s == "" {
			return nil, fmt.Errorf("%s", message)
		}
		return value, nil
	}
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = func(text string) map[string]interface{} {
		out := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(text), &out); err != nil {
			out["Error"] = err.Error()
		}
		return out
	}
	funcs["lookup"] = func(apiVersion, kind, ns, name string) map[string]interface{} {
		return map[string]interface{}{} // like helm template: no cluster to look in
	}
	top.Funcs(funcs)

	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(templateDir, name))
		if err != nil {
			return "", err
		}
		fullName := path.Join(chartName, "templates", name)
		if _, err := top.New(fullName).Parse(string(data)); err != nil {
			return "", fmt.Errorf("parse error in %s: %v", fullName, err)
		}
	}

	kubeVersion := map[string]interface{}{"Version": "v1.29.0", "Major": "1", "Minor": "29", "GitVersion": "v1.29.0"}
	context := map[string]interface{}{
		"Values": values,
		"Chart":  chart,
		"Release": map[string]interface{}{
			"Name": releaseName, "Namespace": namespace, "Service": "Helm", "Revision": 1,
			"IsInstall": true, "IsUpgrade": false,
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": kubeVersion,
			"APIVersions": apiVersions{"v1", "apps/v1", "node.k8s.io/v1", "rbac.authorization.k8s.io/v1"},
		},
		"Files": files{root: chartDir},
	}

	var out strings.Builder
	for _, name := range names {
		isNotes := name == "NOTES.txt"
		if strings.HasPrefix(name, "_") || (isNotes && !notes) {
			continue
		}
		fullName := path.Join(chartName, "templates", name)
		perTemplate := map[string]interface{}{}
		for k, v := range context {
			perTemplate[k] = v
		}
		perTemplate["Template"] = map[string]interface{}{
			"Name": fullName, "BasePath": path.Join(chartName, "templates"),
		}
		var buf bytes.Buffer
		if err := top.ExecuteTemplate(&buf, fullName, perTemplate); err != nil {
			return "", fmt.Errorf("execution error: %v", err)
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.TrimSpace(text) == "" {
			continue
		}
		if isNotes {
			out.WriteString("# NOTES:\n" + text + "\n")
			continue
		}
		// Like Helm, one template may hold several documents; each is written with its own source line.
		for _, doc := range splitDocuments(text) {
			out.WriteString("---\n# Source: " + fullName + "\n" + doc + "\n")
		}
	}
	return out.String(), nil
}

// splitDocuments splits rendered text at "---" lines and drops documents that hold only blanks and comments.
func splitDocuments(text string) []string {
	var docs []string
	var cur []string
	flush := func() {
		meaningful := false
		for _, line := range cur {
			trimmed := strings.TrimSpace(line)
			if trimmed != "" && !strings.HasPrefix(trimmed, "#") {
				meaningful = true
			}
		}
		if meaningful {
			docs = append(docs, strings.Trim(strings.Join(cur, "\n"), "\n"))
		}
		cur = nil
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}
