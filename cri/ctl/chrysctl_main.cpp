// chrysctl: the operator CLI of Chrysalis. Talks to chrysd over its CRI socket; doctor works without it.
#include <string>
#include <vector>

#include "cri/ctl/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return chrys::cri::ctl::Main(args);
}
