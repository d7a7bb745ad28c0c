// Image references ("busybox", "127.0.0.1:5000/team/app:v1", "repo@sha256:..."), normalised as Docker does.
#pragma once

#include <string>
#include <string_view>

#include "base/result.h"

namespace chrys::imagestore {

struct Reference {
  std::string registry;    // "docker.io", "127.0.0.1:5000", "registry.example.com"
  std::string repository;  // "library/busybox"
  std::string tag;         // empty when only a digest was given
  std::string digest;      // "sha256:..." or empty

  // Parses and normalises: no registry → docker.io; a single docker.io path component → library/<name>;
  // neither tag nor digest → tag "latest".
  static base::Result<Reference> Parse(std::string_view text);

  std::string Name() const { return registry + "/" + repository; }
  // "registry/repo:tag" (or "registry/repo@digest" when there is no tag).
  std::string String() const;
  std::string TaggedName() const { return tag.empty() ? "" : Name() + ":" + tag; }
  std::string DigestedName(const std::string& d) const { return Name() + "@" + d; }
  // What to ask the registry for: the digest when given, else the tag.
  std::string ManifestReference() const { return digest.empty() ? tag : digest; }
};

// The host to contact for a registry name: docker.io is served by registry-1.docker.io.
std::string RegistryApiHost(const std::string& registry);

}  // namespace chrys::imagestore
