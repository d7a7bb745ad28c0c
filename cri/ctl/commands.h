// The chrysctl command table: each command family registers its commands here.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cri/client/cri_client.h"

namespace chrys::cri::ctl {

struct Command {
  std::string summary;  // one line for `chrysctl --help`
  std::string usage;    // full help for `chrysctl COMMAND --help`
  // Runs with the arguments after the command name; returns the exit code.
  std::function<int(CriClient& client, const std::vector<std::string>& args)> run;
};

using CommandTable = std::map<std::string, Command>;

void AddRuntimeCommands(CommandTable& table);
void AddImageCommands(CommandTable& table);
void AddPodCommands(CommandTable& table);

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

}  // namespace chrys::cri::ctl
