// OpenApiValidator: checks JSON values against the schemas of an OpenAPI 3 document (test support for the Cloud
// Hypervisor driver): types, required, properties, additionalProperties, enums, integer formats, minimum, $ref,
// arrays.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/result.h"

namespace chrys::runtime::testing {

class OpenApiValidator {
 public:
  // Loads the YAML document with yaml-cpp.
  static base::Result<OpenApiValidator> Load(const std::string& yaml_path);

  // Problems found, each as "<json path>: <what>"; empty when `value` conforms. In strict mode a property the
  // schema does not declare is a problem even when additionalProperties is absent (Cloud Hypervisor would
  // ignore or reject it; either way it is a bug in the body we built).
  std::vector<std::string> Validate(const nlohmann::json& schema, const nlohmann::json& value,
                                    bool strict = true) const;
  std::vector<std::string> ValidateNamed(const std::string& schema_name, const nlohmann::json& value,
                                         bool strict = true) const;
  // The request body schema of `method` on `path` ("/vm.create", "put"); an error if the operation has none.
  base::Result<nlohmann::json> RequestSchema(const std::string& path, const std::string& method) const;
  bool HasOperation(const std::string& path, const std::string& method) const;

  const nlohmann::json& document() const { return doc_; }

 private:
  void Check(const nlohmann::json& schema, const nlohmann::json& value, const std::string& where, bool strict,
             std::vector<std::string>& errors, int depth) const;
  const nlohmann::json* Resolve(const std::string& ref) const;

  nlohmann::json doc_;
};

}  // namespace chrys::runtime::testing
