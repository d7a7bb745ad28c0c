// The chrysctl command table: each command family registers its commands here.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cri/client/cri_client.h"
#include "cri/config.h"

namespace chrys::cri::ctl {

// What every command may need besides its own arguments.
struct GlobalOptions {
  std::string socket;            // chrysd's CRI socket
  bool socket_explicit = false;  // given by --socket or $CHRYSALIS_SOCKET
  std::string config_path = "/etc/chrysalis/config.yaml";
  bool config_explicit = false;  // given by --config
};

struct Command {
  std::string summary;  // one line for `chrysctl --help`
  std::string usage;    // full help for `chrysctl COMMAND --help`; its --options feed shell completion
  // Runs with the arguments after the command name, connected to chrysd; returns the exit code.
  std::function<int(CriClient& client, const std::vector<std::string>& args)> run;
  // When set, the command runs without connecting first (doctor, completion) and this is called instead.
  std::function<int(const GlobalOptions& global, const std::vector<std::string>& args)> run_offline = nullptr;
};

using CommandTable = std::map<std::string, Command>;

void AddRuntimeCommands(CommandTable& table);
void AddImageCommands(CommandTable& table);
void AddPodCommands(CommandTable& table);
void AddVmCommands(CommandTable& table);          // ps, console, debug (vm_commands.cpp)
void AddGcCommands(CommandTable& table);          // gc (gc_commands.cpp)
void AddDoctorCommands(CommandTable& table);      // doctor (doctor_commands.cpp)
void AddCompletionCommands(CommandTable& table);  // completion (completion.cpp)

// chrysd's configuration as chrysd reads it: embedded defaults, then the config file. A missing default file is
// fine (defaults); a missing --config file, an unreadable or invalid one is an error naming it.
struct LoadedConfig {
  Config config;
  std::string path;
  bool from_file = false;
};
base::Result<LoadedConfig> LoadDaemonConfig(const GlobalOptions& global);

// Every command of chrysctl, as the binary registers them.
CommandTable AllCommands();

// "1.5 MiB" (or "1.5MiB" with an empty separator, as crictl prints image sizes).
std::string HumanSize(uint64_t bytes, const char* separator = " ");

// The pod's verbose PodSandboxStatus (pod_commands.cpp).
base::Result<::runtime::v1::PodSandboxStatusResponse> VerbosePodStatus(CriClient& client, const std::string& id);

// Prints "chrysctl: <message>" to stderr and returns 1.
int Fail(const base::Error& error);
int Fail(const std::string& message);

// Splits args into positionals and "--flag value" options; `flags` names the options that take a value and
// `switches` those that do not. Unknown options are an error naming them.
struct ParsedArgs {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;
};
base::Result<ParsedArgs> ParseArgs(const std::vector<std::string>& args, const std::vector<std::string>& flags,
                                   const std::vector<std::string>& switches = {});

// The global options of the command line (before the command name) and where the command starts.
struct GlobalParse {
  GlobalOptions options;
  std::vector<std::string> rest;  // command name and its arguments
};
base::Result<GlobalParse> ParseGlobal(const std::vector<std::string>& argv, const char* env_socket);

// Runs chrysctl on `argv` (without the program name); returns the exit code.
int Main(const std::vector<std::string>& argv);

// The long options ("--name") a usage text mentions, in order of first appearance, for shell completion.
std::vector<std::string> OptionsInUsage(const std::string& usage);

// The bash completion script for `table` (completion.cpp).
std::string BashCompletion(const CommandTable& table);

// Quotes `word` for a POSIX shell when it needs it ("abc" stays, "a b" → 'a b', "it's" → 'it'\''s').
std::string ShellQuote(const std::string& word);

}  // namespace chrys::cri::ctl
