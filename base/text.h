// Small text helpers: splitting /proc files, load lists and other delimiter-separated text; ASCII case.
#pragma once

#include <cctype>
#include <string>
#include <string_view>
#include <vector>

namespace chrys::base {

// The fields of `text` separated (or terminated) by `delim`: "a\0b\0" and "a\0b" both give {"a", "b"}; empty
// fields between two delimiters are kept ("a\n\nb" gives {"a", "", "b"}).
inline std::vector<std::string> SplitFields(std::string_view text, char delim) {
  std::vector<std::string> fields;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(delim, start);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    fields.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return fields;
}

// `text` with ASCII letters in upper case (names like signals and capabilities, which requests spell in any case).
inline std::string AsciiUpper(std::string_view text) {
  std::string out(text);
  for (auto& ch : out) {
    ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  }
  return out;
}

}  // namespace chrys::base
