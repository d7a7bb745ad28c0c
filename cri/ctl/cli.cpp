// chrysctl's command line: global flags, config loading, dispatch to the command table, shared helpers.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "cri/ctl/commands.h"

namespace chrys::cri::ctl {

std::string HumanSize(uint64_t bytes, const char* separator) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  std::ostringstream out;
  out << std::fixed << std::setprecision(unit == 0 ? 0 : 1) << value << separator << units[unit];
  return out.str();
}

namespace {

constexpr const char* kDefaultSocket = "/run/chrysalis/chrysalis.sock";

void PrintUsage(const CommandTable& table) {
  std::cout << "Usage: chrysctl [--socket PATH] [--config PATH] COMMAND [ARGS]\n\n"
               "Operator CLI for the Chrysalis CRI runtime.\n\nCommands:\n";
  for (const auto& [name, command] : table) {
    std::cout << "  " << std::left;
    std::cout.width(14);
    std::cout << name << command.summary << "\n";
  }
  std::cout << "\nGlobal flags:\n"
               "  --socket PATH   chrysd's CRI socket (default: $CHRYSALIS_SOCKET, else the config's socket,\n"
               "                  else "
            << kDefaultSocket
            << ")\n"
               "  --config PATH   chrysd's config file (default /etc/chrysalis/config.yaml; doctor and gc read it)\n"
               "  -h, --help      this help; chrysctl COMMAND --help for a command's help\n";
}

}  // namespace

int Fail(const base::Error& error) {
  return Fail(error.message());
}

int Fail(const std::string& message) {
  std::cerr << "chrysctl: " << message << "\n";
  return 1;
}

base::Result<ParsedArgs> ParseArgs(const std::vector<std::string>& args, const std::vector<std::string>& flags,
                                   const std::vector<std::string>& switches) {
  ParsedArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() < 2 || arg.rfind("--", 0) != 0) {
      out.positional.push_back(arg);
      continue;
    }
    std::string name = arg;
    std::string value;
    bool has_value = false;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (std::find(switches.begin(), switches.end(), name) != switches.end()) {
      out.options[name] = "true";
    } else if (std::find(flags.begin(), flags.end(), name) != flags.end()) {
      if (!has_value) {
        if (i + 1 >= args.size()) {
          return base::InvalidArgument(name + " needs a value");
        }
        value = args[++i];
      }
      out.options[name] = value;
    } else {
      return base::InvalidArgument("unknown option '" + name + "'");
    }
  }
  return out;
}

base::Result<GlobalParse> ParseGlobal(const std::vector<std::string>& argv, const char* env_socket) {
  GlobalParse out;
  if (env_socket != nullptr && *env_socket != '\0') {
    out.options.socket = env_socket;
    out.options.socket_explicit = true;
  }
  size_t i = 0;
  for (; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    std::string* target = nullptr;
    bool* given = nullptr;
    std::string name;
    if (arg == "--socket" || arg.rfind("--socket=", 0) == 0) {
      target = &out.options.socket;
      given = &out.options.socket_explicit;
      name = "--socket";
    } else if (arg == "--config" || arg.rfind("--config=", 0) == 0) {
      target = &out.options.config_path;
      given = &out.options.config_explicit;
      name = "--config";
    } else {
      break;
    }
    if (arg == name) {
      if (i + 1 >= argv.size()) {
        return base::InvalidArgument(name + " needs a value");
      }
      *target = argv[++i];
    } else {
      *target = arg.substr(name.size() + 1);
    }
    if (target->empty()) {
      return base::InvalidArgument(name + " needs a non-empty value");
    }
    *given = true;
  }
  out.rest.assign(argv.begin() + static_cast<std::ptrdiff_t>(i), argv.end());
  return out;
}

base::Result<LoadedConfig> LoadDaemonConfig(const GlobalOptions& global) {
  LoadedConfig out;
  out.path = global.config_path;
  if (::access(out.path.c_str(), F_OK) != 0) {
    if (global.config_explicit) {
      return base::NotFound("config file " + out.path + " does not exist");
    }
  } else {
    auto text = base::ReadFile(out.path, 1 << 20);
    if (!text.ok()) {
      return text.error().Wrap("read config " + out.path);
    }
    CHRYS_RETURN_IF_ERROR(ApplyYaml(out.config, *text, out.path));
    CHRYS_RETURN_IF_ERROR(Validate(out.config));
    out.from_file = true;
  }
  if (global.socket_explicit) {
    out.config.socket = global.socket;
  }
  return out;
}

std::vector<std::string> OptionsInUsage(const std::string& usage) {
  std::vector<std::string> out;
  static const std::regex kOption("(^|[^A-Za-z0-9-])(--[a-z][a-z0-9-]*)");
  for (auto it = std::sregex_iterator(usage.begin(), usage.end(), kOption); it != std::sregex_iterator(); ++it) {
    std::string option = (*it)[2].str();
    if (std::find(out.begin(), out.end(), option) == out.end()) {
      out.push_back(option);
    }
  }
  if (std::find(out.begin(), out.end(), "--help") == out.end()) {
    out.push_back("--help");
  }
  return out;
}

std::string ShellQuote(const std::string& word) {
  if (!word.empty() && word.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                                              "@%_+=:,./-") == std::string::npos) {
    return word;
  }
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

CommandTable AllCommands() {
  CommandTable table;
  AddRuntimeCommands(table);
  AddImageCommands(table);
  AddPodCommands(table);
  AddVmCommands(table);
  AddGcCommands(table);
  AddDoctorCommands(table);
  AddCompletionCommands(table);
  return table;
}

int Main(const std::vector<std::string>& argv) {
  auto global = ParseGlobal(argv, std::getenv("CHRYSALIS_SOCKET"));
  if (!global.ok()) {
    std::cerr << "chrysctl: " << global.error().message() << " (see chrysctl --help)\n";
    return 2;
  }
  const std::vector<std::string>& args = global->rest;
  CommandTable table = AllCommands();
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    if (args.size() >= 2 && table.count(args[1]) != 0) {
      std::cout << table[args[1]].usage;
      return 0;
    }
    PrintUsage(table);
    return args.empty() ? 2 : 0;
  }
  auto it = table.find(args[0]);
  if (it == table.end()) {
    std::cerr << "chrysctl: unknown command '" << args[0] << "' (see chrysctl --help)\n";
    return 2;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  for (const auto& arg : rest) {
    if (arg == "--") {
      break;  // what follows belongs to the command run inside (exec)
    }
    if (arg == "--help" || arg == "-h") {
      std::cout << it->second.usage;
      return 0;
    }
  }
  if (it->second.run_offline) {
    return it->second.run_offline(global->options, rest);
  }
  GlobalOptions options = global->options;
  if (!options.socket_explicit) {
    // The config names chrysd's socket; a config that does not load leaves the default (doctor says why).
    auto config = LoadDaemonConfig(options);
    options.socket = config.ok() ? config->config.socket : kDefaultSocket;
  }
  auto client = CriClient::Connect(options.socket);
  if (!client.ok()) {
    return Fail(client.error());
  }
  return it->second.run(*client, rest);
}

}  // namespace chrys::cri::ctl
