#include "imagestore/reference.h"

#include <cctype>

#include "imagestore/digest.h"

namespace chrys::imagestore {
namespace {

bool IsAlnumLower(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// One path component: [a-z0-9]+ joined by '.', '_', '__' or runs of '-'.
bool ValidPathComponent(std::string_view c) {
  if (c.empty() || !IsAlnumLower(c.front()) || !IsAlnumLower(c.back())) {
    return false;
  }
  for (size_t i = 0; i < c.size(); ++i) {
    char ch = c[i];
    if (IsAlnumLower(ch)) {
      continue;
    }
    if (ch == '.' || ch == '_') {
      // "__" is allowed, "._" and ".." are not.
      if (ch == '_' && i + 1 < c.size() && c[i + 1] == '_') {
        ++i;
      }
      if (i + 1 < c.size() && !IsAlnumLower(c[i + 1])) {
        return false;
      }
      continue;
    }
    if (ch == '-') {
      continue;
    }
    return false;
  }
  return true;
}

bool ValidTag(std::string_view t) {
  if (t.empty() || t.size() > 128) {
    return false;
  }
  for (size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    bool word = std::isalnum(static_cast<unsigned char>(c)) || c == '_';
    if (!word && (i == 0 || (c != '.' && c != '-'))) {
      return false;
    }
  }
  return true;
}

bool ValidRegistry(std::string_view r) {
  if (r.empty() || !std::isalnum(static_cast<unsigned char>(r.front()))) {
    return false;
  }
  for (char c : r) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']')) {
      return false;
    }
  }
  return true;
}

}  // namespace

base::Result<Reference> Reference::Parse(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return base::InvalidArgument("image reference \"" + std::string(text) + "\" is invalid: " + why);
  };
  if (text.empty()) {
    return bad("it is empty");
  }
  if (text.size() > 4096) {
    return bad("it is longer than 4096 characters");
  }
  Reference ref;
  std::string_view rest = text;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    auto d = Digest::Parse(rest.substr(at + 1));
    if (!d.ok()) {
      return bad(d.error().message());
    }
    ref.digest = d->str();
    rest = rest.substr(0, at);
  }
  // A tag follows the last ':' that comes after the last '/'.
  size_t slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    ref.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (!ValidTag(ref.tag)) {
      return bad("tag \"" + ref.tag + "\" must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
    }
  }
  std::string_view path = rest;
  size_t first_slash = rest.find('/');
  if (first_slash != std::string_view::npos) {
    std::string_view first = rest.substr(0, first_slash);
    if (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos ||
        first == "localhost") {
      if (!ValidRegistry(first)) {
        return bad("registry \"" + std::string(first) + "\" is not a host[:port]");
      }
      ref.registry = std::string(first);
      path = rest.substr(first_slash + 1);
    }
  }
  if (ref.registry.empty()) {
    ref.registry = "docker.io";
  }
  if (ref.registry == "index.docker.io" || ref.registry == "registry-1.docker.io") {
    ref.registry = "docker.io";
  }
  if (path.empty()) {
    return bad("repository name is empty");
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    std::string_view comp = path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (!ValidPathComponent(comp)) {
      return bad("repository component \"" + std::string(comp) +
                 "\" must be lowercase letters and digits separated by '.', '_', '__' or '-'");
    }
    if (end == std::string_view::npos) {
      break;
    }
    start = end + 1;
  }
  ref.repository = std::string(path);
  if (ref.registry == "docker.io" && ref.repository.find('/') == std::string::npos) {
    ref.repository = "library/" + ref.repository;
  }
  if (ref.tag.empty() && ref.digest.empty()) {
    ref.tag = "latest";
  }
  return ref;
}

std::string Reference::String() const {
  std::string s = Name();
  if (!tag.empty()) {
    s += ":" + tag;
  }
  if (!digest.empty()) {
    s += "@" + digest;
  }
  return s;
}

std::string RegistryApiHost(const std::string& registry) {
  return registry == "docker.io" ? "registry-1.docker.io" : registry;
}

}  // namespace chrys::imagestore
