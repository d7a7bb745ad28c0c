#include "base/phase_timer.h"

#include <gtest/gtest.h>

#include <regex>
#include <thread>

namespace chrys::base {
namespace {

TEST(PhaseTimer, NamesEachPhaseWithItsDurationInOrder) {
  PhaseTimer phases;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  phases.End("network");
  phases.Note(" (2 NICs)");
  phases.End("vm");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(phases.summary(), m, std::regex(R"(network (\d+) ms \(2 NICs\), vm (\d+) ms)")))
      << phases.summary();
  EXPECT_GE(std::stoi(m[1]), 20);  // the sleep is inside the first phase (a lower bound: sleep_for never returns early)
}

TEST(PhaseTimer, NothingEndedGivesAnEmptySummary) {
  PhaseTimer phases;
  EXPECT_EQ(phases.summary(), "");
}

}  // namespace
}  // namespace chrys::base
