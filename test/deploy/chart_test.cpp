// charts/chrysalis rendered by test/deploy/render (Go text/template + sprig, as Helm does) under default and
// non-default values: every object is checked for the fields its kind requires.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <regex>
#include <set>

#include "e2e/fixtures/temp_dir.h"
#include "test/deploy/deploy_test_util.h"

namespace chrys::deploy_test {
namespace {

const std::set<std::string> kHandlers = {"chrysalis", "chrysalis-qemu", "chrysalis-snp", "chrysalis-tdx",
                                         "chrysalis-cvm"};

struct Rendered {
  base::CommandResult result;
  std::vector<YAML::Node> objects;
  std::string notes;

  const YAML::Node* Find(const std::string& kind, const std::string& name = "") const {
    for (const auto& o : objects) {
      if (o["kind"].as<std::string>() == kind && (name.empty() || o["metadata"]["name"].as<std::string>() == name)) {
        return &o;
      }
    }
    return nullptr;
  }
  std::vector<YAML::Node> All(const std::string& kind) const {
    std::vector<YAML::Node> out;
    for (const auto& o : objects) {
      if (o["kind"].as<std::string>() == kind) {
        out.push_back(o);
      }
    }
    return out;
  }
};

base::CommandResult RenderRaw(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {CHART_RENDER_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(SourceDir() + "/charts/chrysalis");
  return RunTool(argv);
}

Rendered Render(const std::vector<std::string>& args = {}) {
  Rendered out;
  std::vector<std::string> with_notes = args;
  with_notes.push_back("--notes");
  out.result = RenderRaw(with_notes);
  EXPECT_TRUE(out.result.success()) << out.result.stderr_data;
  std::string text = out.result.stdout_data;
  if (auto notes = text.find("# NOTES:\n"); notes != std::string::npos) {
    size_t end = text.find("\n---\n", notes);
    out.notes = text.substr(notes, end == std::string::npos ? std::string::npos : end - notes);
    text.erase(notes, end == std::string::npos ? std::string::npos : end + 1 - notes);
  }
  try {
    for (const auto& doc : YAML::LoadAll(text)) {
      if (!doc.IsNull()) {
        out.objects.push_back(doc);
      }
    }
  } catch (const YAML::Exception& e) {
    ADD_FAILURE() << "rendered output is not YAML: " << e.what() << "\n" << text;
  }
  return out;
}

// A scalar the API server reads as a string: quoted, or plain text that YAML does not turn into a bool,
// number or null.
bool IsYamlString(const YAML::Node& node) {
  static const std::regex typed(R"(^(true|false|yes|no|on|off|null|~|[-+]?[0-9][0-9_.eE+-]*)$)", std::regex::icase);
  return node.IsScalar() && (node.Tag() == "!" || !std::regex_match(node.Scalar(), typed));
}

bool IsQuantity(const YAML::Node& node) {
  static const std::regex quantity(R"(^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$)");
  return node.IsScalar() && std::regex_match(node.Scalar(), quantity);
}

// A DNS-1123 subdomain: what the API server requires of metadata.name.
bool IsDnsName(const std::string& name) {
  static const std::regex dns(R"(^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$)");
  return name.size() <= 253 && std::regex_match(name, dns);
}

// The fields the API server and kubelet need from every kind this chart renders.
void CheckObjects(const Rendered& r) {
  ASSERT_FALSE(r.objects.empty());
  std::set<std::string> kinds_names;
  for (const auto& o : r.objects) {
    ASSERT_TRUE(o.IsMap());
    ASSERT_TRUE(o["apiVersion"] && o["apiVersion"].IsScalar()) << YAML::Dump(o);
    ASSERT_TRUE(o["kind"] && o["kind"].IsScalar()) << YAML::Dump(o);
    ASSERT_TRUE(o["metadata"]["name"] && o["metadata"]["name"].IsScalar()) << YAML::Dump(o);
    std::string kind = o["kind"].as<std::string>();
    std::string name = o["metadata"]["name"].as<std::string>();
    EXPECT_TRUE(IsDnsName(name)) << name;
    EXPECT_TRUE(kinds_names.insert(kind + "/" + name).second) << "duplicate " << kind << "/" << name;
    static const std::map<std::string, std::string> kApi = {
        {"ConfigMap", "v1"}, {"DaemonSet", "apps/v1"}, {"RuntimeClass", "node.k8s.io/v1"}};
    ASSERT_TRUE(kApi.count(kind)) << "unexpected kind " << kind;
    EXPECT_EQ(o["apiVersion"].as<std::string>(), kApi.at(kind));
    if (kind != "RuntimeClass") {  // cluster-scoped
      EXPECT_TRUE(o["metadata"]["namespace"].IsScalar()) << kind << "/" << name;
    }
    if (kind == "ConfigMap") {
      ASSERT_TRUE(o["data"].IsMap());
      for (const auto& entry : o["data"]) {
        EXPECT_TRUE(entry.second.IsScalar()) << "ConfigMap data values must be strings";
      }
    }
    if (kind == "RuntimeClass") {
      ASSERT_TRUE(o["handler"].IsScalar()) << name;
      EXPECT_TRUE(IsDnsName(o["handler"].as<std::string>()));
      EXPECT_TRUE(IsQuantity(o["overhead"]["podFixed"]["cpu"])) << name;
      EXPECT_TRUE(IsQuantity(o["overhead"]["podFixed"]["memory"])) << name;
      if (o["scheduling"]) {
        ASSERT_TRUE(o["scheduling"]["nodeSelector"].IsMap());
        for (const auto& entry : o["scheduling"]["nodeSelector"]) {
          EXPECT_TRUE(IsYamlString(entry.second)) << "label values must be strings";
        }
      }
    }
  }
  // DaemonSet: selector matches the template, containers complete, every mount has its volume.
  const YAML::Node* ds = r.Find("DaemonSet");
  ASSERT_NE(ds, nullptr);
  const YAML::Node& spec = (*ds)["spec"];
  const YAML::Node& pod = spec["template"]["spec"];
  ASSERT_TRUE(spec["selector"]["matchLabels"].IsMap());
  for (const auto& label : spec["selector"]["matchLabels"]) {
    std::string key = label.first.as<std::string>();
    ASSERT_TRUE(spec["template"]["metadata"]["labels"][key]) << "template lacks selector label " << key;
    EXPECT_EQ(spec["template"]["metadata"]["labels"][key].as<std::string>(), label.second.as<std::string>());
  }
  std::map<std::string, YAML::Node> volumes;
  for (const auto& v : pod["volumes"]) {
    std::string vname = v["name"].as<std::string>();
    EXPECT_TRUE(volumes.emplace(vname, v).second) << "duplicate volume " << vname;
    int sources = (v["hostPath"] ? 1 : 0) + (v["configMap"] ? 1 : 0) + (v["emptyDir"] ? 1 : 0);
    EXPECT_EQ(sources, 1) << "volume " << vname << " needs exactly one source";
    if (v["hostPath"]) {
      static const std::set<std::string> kTypes = {"",       "DirectoryOrCreate", "Directory",  "FileOrCreate", "File",
                                                   "Socket", "CharDevice",        "BlockDevice"};
      EXPECT_EQ(v["hostPath"]["path"].as<std::string>()[0], '/');
      EXPECT_TRUE(kTypes.count(v["hostPath"]["type"].as<std::string>(""))) << vname;
    }
    if (v["configMap"]) {
      const YAML::Node* cm = r.Find("ConfigMap", v["configMap"]["name"].as<std::string>());
      ASSERT_NE(cm, nullptr) << "volume " << vname << " names a ConfigMap the chart does not create";
      for (const auto& item : v["configMap"]["items"]) {
        EXPECT_TRUE((*cm)["data"][item["key"].as<std::string>()]) << "ConfigMap lacks key " << item["key"];
      }
    }
  }
  for (const char* list : {"initContainers", "containers"}) {
    for (const auto& c : pod[list]) {
      ASSERT_TRUE(c["name"].IsScalar());
      ASSERT_TRUE(c["image"].IsScalar()) << c["name"];
      EXPECT_NE(c["image"].as<std::string>().find(':'), std::string::npos);
      bool privileged = c["securityContext"]["privileged"].as<bool>(false);
      for (const auto& m : c["volumeMounts"]) {
        std::string vname = m["name"].as<std::string>();
        EXPECT_TRUE(volumes.count(vname)) << "mount of undefined volume " << vname;
        EXPECT_EQ(m["mountPath"].as<std::string>()[0], '/');
        if (m["mountPropagation"].as<std::string>("") == "Bidirectional") {
          EXPECT_TRUE(privileged) << "Bidirectional propagation needs a privileged container";
        }
      }
      for (const auto& e : c["env"]) {
        EXPECT_TRUE(e["name"].IsScalar());
        EXPECT_TRUE(IsYamlString(e["value"])) << e["name"] << " must be a string";
      }
    }
  }
}

std::string EnvOf(const YAML::Node& container, const std::string& name) {
  for (const auto& e : container["env"]) {
    if (e["name"].as<std::string>() == name) {
      return e["value"].as<std::string>();
    }
  }
  return "<unset>";
}

TEST(Chart, DefaultValuesRenderValidObjects) {
  auto r = Render();
  CheckObjects(r);
  std::set<std::string> classes;
  for (const auto& rc : r.All("RuntimeClass")) {
    classes.insert(rc["metadata"]["name"].as<std::string>());
    EXPECT_EQ(rc["handler"].as<std::string>(), rc["metadata"]["name"].as<std::string>());
  }
  EXPECT_EQ(classes, kHandlers);
  const YAML::Node* snp = r.Find("RuntimeClass", "chrysalis-snp");
  ASSERT_NE(snp, nullptr);
  EXPECT_EQ(
      (*snp)["scheduling"]["nodeSelector"]["feature.node.kubernetes.io/cpu-security.sev.snp.enabled"].as<std::string>(),
      "true");
  const YAML::Node* tdx = r.Find("RuntimeClass", "chrysalis-tdx");
  ASSERT_NE(tdx, nullptr);
  EXPECT_TRUE((*tdx)["scheduling"]["nodeSelector"]["feature.node.kubernetes.io/cpu-security.tdx.enabled"]);
}

TEST(Chart, DaemonSetRunsPrivilegedOnTheHostWithProbesOnTheSocket) {
  auto r = Render();
  const YAML::Node* ds = r.Find("DaemonSet");
  ASSERT_NE(ds, nullptr);
  const YAML::Node& pod = (*ds)["spec"]["template"]["spec"];
  EXPECT_TRUE(pod["hostPID"].as<bool>());
  EXPECT_TRUE(pod["hostNetwork"].as<bool>());
  const YAML::Node& c = pod["containers"][0];
  EXPECT_TRUE(c["securityContext"]["privileged"].as<bool>());
  EXPECT_EQ(EnvOf(c, "CHRYSALIS_MODE"), "host");
  for (const char* probe : {"readinessProbe", "livenessProbe", "startupProbe"}) {
    auto cmd = c[probe]["exec"]["command"].as<std::vector<std::string>>();
    EXPECT_EQ(cmd, (std::vector<std::string>{"/opt/chrysalis/build/cri/chrysctl", "--socket",
                                             "/run/chrysalis/chrysalis.sock", "version"}))
        << probe;
  }
  std::map<std::string, std::string> mounts;  // path -> propagation
  for (const auto& m : c["volumeMounts"]) {
    mounts[m["mountPath"].as<std::string>()] = m["mountPropagation"].as<std::string>("");
  }
  for (const char* path : {"/run/chrysalis", "/var/lib/chrysalis", "/run/netns"}) {
    EXPECT_EQ(mounts[path], "Bidirectional") << path;
  }
  for (const char* path : {"/etc/chrysalis", "/opt/cni/bin", "/etc/cni/net.d", "/host", "/dev/net/tun"}) {
    EXPECT_TRUE(mounts.count(path)) << path;
  }
  // Optional devices are not hostPath volumes (a missing one would be created as a directory).
  EXPECT_FALSE(mounts.count("/dev/kvm"));
  std::string init = YAML::Dump(pod["initContainers"][0]["command"]);
  EXPECT_NE(init.find("/dev/kvm"), std::string::npos);
  EXPECT_NE(init.find("/dev/vhost-vsock"), std::string::npos);
  // Entrypoint: the chart's files/entrypoint.sh, byte for byte.
  const YAML::Node* cm = r.Find("ConfigMap");
  ASSERT_NE(cm, nullptr);
  EXPECT_EQ((*cm)["data"]["entrypoint.sh"].as<std::string>(),
            ReadText(SourceDir() + "/charts/chrysalis/files/entrypoint.sh"));
  EXPECT_NE(r.notes.find("--container-runtime-endpoint=unix:///run/chrysalis/chrysalis.sock"), std::string::npos)
      << r.notes;
  EXPECT_NE(r.notes.find("--runtime-request-timeout"), std::string::npos);
}

TEST(Chart, ConfigMapConfigIsChrysdsDefaults) {
  auto r = Render();
  const YAML::Node* cm = r.Find("ConfigMap");
  ASSERT_NE(cm, nullptr);
  e2e::TempDir dir("chrys-chart-test");
  WriteText(dir.path() + "/config.yaml", (*cm)["data"]["config.yaml"].as<std::string>());
  auto printed = PrintConfig(dir.path() + "/config.yaml");
  ASSERT_TRUE(printed.success()) << printed.stderr_data;
  EXPECT_EQ(printed.stdout_data, DefaultConfigYaml()) << "values.yaml config: drifted from chrysd's defaults";
}

TEST(Chart, NonDefaultValuesAreHonoured) {
  auto r = Render({"--name",      "edge",
                   "--namespace", "kube-system",
                   "--set",       "mode=daemon",
                   "--set",       "runtimeClasses.chrysalis-snp.enabled=false",
                   "--set",       "runtimeClasses.chrysalis-tdx.enabled=false",
                   "--set",       "runtimeClasses.chrysalis.overhead.memory=200Mi",
                   "--set",       "nodeSelector.pool=vm-nodes",
                   "--set",       "image.tag=1.2.3",
                   "--set",       "config.run_dir=/run/chrys2",
                   "--set",       "config.socket=/run/chrys2/cri.sock",
                   "--set",       "config.log.level=debug",
                   "--set",       "tolerations=null",
                   "--set",       "installCniExample=false",
                   "-f",          SourceDir() + "/test/deploy/testdata/kvm-required.yaml"});
  CheckObjects(r);
  std::set<std::string> classes;
  for (const auto& rc : r.All("RuntimeClass")) {
    classes.insert(rc["metadata"]["name"].as<std::string>());
    EXPECT_EQ(rc["scheduling"]["nodeSelector"]["pool"].as<std::string>(), "vm-nodes");
  }
  EXPECT_EQ(classes, (std::set<std::string>{"chrysalis", "chrysalis-qemu", "chrysalis-cvm"}));
  EXPECT_EQ((*r.Find("RuntimeClass", "chrysalis"))["overhead"]["podFixed"]["memory"].as<std::string>(), "200Mi");
  const YAML::Node* ds = r.Find("DaemonSet", "edge-chrysalis");
  ASSERT_NE(ds, nullptr);
  EXPECT_EQ((*ds)["metadata"]["namespace"].as<std::string>(), "kube-system");
  const YAML::Node& pod = (*ds)["spec"]["template"]["spec"];
  EXPECT_FALSE(pod["tolerations"]);
  EXPECT_EQ(pod["nodeSelector"]["pool"].as<std::string>(), "vm-nodes");
  const YAML::Node& c = pod["containers"][0];
  EXPECT_EQ(c["image"].as<std::string>(), "ghcr.io/chrysalis-runtime/chrysalis:1.2.3");
  EXPECT_EQ(EnvOf(c, "CHRYSALIS_MODE"), "daemon");
  EXPECT_EQ(EnvOf(c, "CHRYSALIS_SOCKET"), "/run/chrys2/cri.sock");
  EXPECT_EQ(EnvOf(c, "CHRYSALIS_INSTALL_CNI"), "false");
  EXPECT_EQ(c["livenessProbe"]["exec"]["command"][2].as<std::string>(), "/run/chrys2/cri.sock");
  bool kvm_mounted = false;
  for (const auto& v : pod["volumes"]) {
    if (v["hostPath"] && v["hostPath"]["path"].as<std::string>() == "/dev/kvm") {
      kvm_mounted = v["hostPath"]["type"].as<std::string>() == "CharDevice";
    }
    if (v["name"].as<std::string>() == "run-dir") {
      EXPECT_EQ(v["hostPath"]["path"].as<std::string>(), "/run/chrys2");
    }
  }
  EXPECT_TRUE(kvm_mounted);
  // The ConfigMap carries the changed keys, and chrysd accepts it.
  const YAML::Node* cm = r.Find("ConfigMap", "edge-chrysalis");
  ASSERT_NE(cm, nullptr);
  e2e::TempDir dir("chrys-chart-test");
  WriteText(dir.path() + "/config.yaml", (*cm)["data"]["config.yaml"].as<std::string>());
  auto printed = PrintConfig(dir.path() + "/config.yaml");
  ASSERT_TRUE(printed.success()) << printed.stderr_data;
  auto effective = YAML::Load(printed.stdout_data);
  EXPECT_EQ(effective["socket"].as<std::string>(), "/run/chrys2/cri.sock");
  EXPECT_EQ(effective["log"]["level"].as<std::string>(), "debug");
  EXPECT_NE(r.notes.find("mode \"daemon\""), std::string::npos);
  EXPECT_NE(r.notes.find("unix:///run/chrys2/cri.sock"), std::string::npos);
}

TEST(Chart, RendererRefusesWhatItCannotDo) {
  // List indices in --set are not implemented: the renderer says so instead of guessing.
  auto result = RenderRaw({"--set", "devices[0].required=true"});
  EXPECT_FALSE(result.success());
  EXPECT_NE(result.stderr_data.find("list indices are not supported"), std::string::npos) << result.stderr_data;
}

TEST(Chart, ConfigChangeRollsThePods) {
  auto a = Render();
  auto b = Render({"--set", "config.log.level=debug"});
  auto checksum = [](const Rendered& r) {
    return (*r.Find("DaemonSet"))["spec"]["template"]["metadata"]["annotations"]["checksum/config"].as<std::string>();
  };
  EXPECT_NE(checksum(a), checksum(b));
  EXPECT_EQ(checksum(a), checksum(Render()));
}

// --- bad values: a clear error that names the value ---

void ExpectRejected(const std::vector<std::string>& args, const std::vector<std::string>& needles) {
  auto result = RenderRaw(args);
  EXPECT_FALSE(result.success()) << "accepted: " << ::testing::PrintToString(args);
  for (const auto& needle : needles) {
    EXPECT_NE(result.stderr_data.find(needle), std::string::npos)
        << "error for " << ::testing::PrintToString(args) << " lacks '" << needle << "':\n"
        << result.stderr_data;
  }
}

TEST(Chart, WrongTypesFailNamingTheValue) {
  ExpectRejected({"--set", "config.log.max_files=many"},
                 {"config.log.max_files", "Invalid type. Expected: integer, given: string"});
  ExpectRejected({"--set", "mode=3"}, {"mode: Invalid type. Expected: string, given: integer"});
  ExpectRejected({"--set-string", "runtimeClasses.chrysalis.enabled=yes"},
                 {"runtimeClasses.chrysalis.enabled", "Expected: boolean, given: string"});
  ExpectRejected({"--set", "nodeSelector=linux"}, {"nodeSelector", "Expected: object, given: string"});
  ExpectRejected({"--set", "probes.periodSeconds=0"}, {"probes.periodSeconds", "greater than or equal to 1"});
}

TEST(Chart, WrongValuesFailNamingTheValue) {
  ExpectRejected({"--set", "mode=vm"}, {"mode", "\"host\", \"daemon\""});
  ExpectRejected({"--set", "runtimeClasses.chrysalis.overhead.cpu=lots"},
                 {"runtimeClasses.chrysalis.overhead.cpu", "Does not match pattern"});
  ExpectRejected({"--set", "runtimeClasses.chrysalis-sev.enabled=true"},
                 {"runtimeClasses", "chrysalis-sev is not allowed"});
  ExpectRejected({"--set", "config.vmm.accel=hvf"}, {"config.vmm.accel"});
  ExpectRejected({"--set", "config.state_dir=var/lib"}, {"config.state_dir", "Does not match pattern '^/'"});
  ExpectRejected({"--set", "image.repository="}, {"image.repository", "String length"});
  // Cross-value rule checked by the template itself.
  ExpectRejected({"--set", "config.socket=/var/run/other.sock"},
                 {"config.socket (/var/run/other.sock) must be inside config.run_dir (/run/chrysalis)"});
}

}  // namespace
}  // namespace chrys::deploy_test
