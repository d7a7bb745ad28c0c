// chrysctl: the operator CLI of Chrysalis. Talks to chrysd over its CRI socket.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cri/ctl/commands.h"

namespace chrys::cri::ctl {

int Fail(const base::Error& error) { return Fail(error.message()); }

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

}  // namespace chrys::cri::ctl

int main(int argc, char** argv) {
  using chrys::cri::CriClient;
  using namespace chrys::cri::ctl;

  const char* env_socket = std::getenv("CHRYSALIS_SOCKET");
  std::string socket = env_socket != nullptr ? env_socket : "/run/chrysalis/chrysalis.sock";
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (args.empty() && arg == "--socket" && i + 1 < argc) {
      socket = argv[++i];
    } else if (args.empty() && arg.rfind("--socket=", 0) == 0) {
      socket = arg.substr(9);
    } else {
      args.push_back(arg);
    }
  }

  CommandTable table;
  AddRuntimeCommands(table);
  AddImageCommands(table);
  AddPodCommands(table);

  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    std::cout << "Usage: chrysctl [--socket PATH] COMMAND [ARGS]\n\n"
                 "Operator CLI for the Chrysalis CRI runtime.\n\nCommands:\n";
    for (const auto& [name, command] : table) {
      std::cout << "  " << std::left;
      std::cout.width(14);
      std::cout << name << command.summary << "\n";
    }
    std::cout << "\nGlobal flags:\n"
                 "  --socket PATH   chrysd's CRI socket (default /run/chrysalis/chrysalis.sock, or $CHRYSALIS_SOCKET)\n"
                 "  -h, --help      this help; chrysctl COMMAND --help for a command's help\n";
    return args.empty() ? 2 : 0;
  }
  auto it = table.find(args[0]);
  if (it == table.end()) {
    std::cerr << "chrysctl: unknown command '" << args[0] << "' (see chrysctl --help)\n";
    return 2;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  for (const auto& arg : rest) {
    if (arg == "--help" || arg == "-h") {
      std::cout << it->second.usage;
      return 0;
    }
  }
  auto client = CriClient::Connect(socket);
  if (!client.ok()) {
    return Fail(client.error());
  }
  return it->second.run(*client, rest);
}
