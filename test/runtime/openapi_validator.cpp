#include "test/runtime/openapi_validator.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <limits>

namespace chrys::runtime::testing {

using nlohmann::json;

namespace {

// YAML scalars carry no type for yaml-cpp; plain scalars that read as bool/integer/float become those, quoted ones
// stay strings.
json ScalarToJson(const YAML::Node& node) {
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") {
    return s;
  }
  if (s == "true" || s == "false") {
    return s == "true";
  }
  if (s == "null" || s == "~") {
    return nullptr;
  }
  int64_t integer = 0;
  auto [end_int, ec_int] = std::from_chars(s.data(), s.data() + s.size(), integer);
  if (!s.empty() && ec_int == std::errc() && end_int == s.data() + s.size()) {
    return integer;
  }
  double real = 0;
  auto [end_real, ec_real] = std::from_chars(s.data(), s.data() + s.size(), real);
  if (!s.empty() && ec_real == std::errc() && end_real == s.data() + s.size()) {
    return real;
  }
  return s;
}

json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& kv : node) {
        out[kv.first.as<std::string>()] = YamlToJson(kv.second);
      }
      return out;
    }
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) {
        out.push_back(YamlToJson(item));
      }
      return out;
    }
    case YAML::NodeType::Scalar:
      return ScalarToJson(node);
    default:
      return nullptr;
  }
}

bool InRange(const json& v, const std::string& format) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (format == "int8")
      return u <= 127;
    if (format == "int16")
      return u <= 32767;
    if (format == "int32")
      return u <= 2147483647ULL;
    if (format == "int64")
      return u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (format == "uint8")
      return u <= 255;
    if (format == "uint16")
      return u <= 65535;
    if (format == "uint32")
      return u <= 4294967295ULL;
    return true;
  }
  int64_t i = v.get<int64_t>();
  if (format == "int8")
    return i >= -128 && i <= 127;
  if (format == "int16")
    return i >= -32768 && i <= 32767;
  if (format == "int32")
    return i >= std::numeric_limits<int32_t>::min() && i <= std::numeric_limits<int32_t>::max();
  if (format == "uint8")
    return i >= 0 && i <= 255;
  if (format == "uint16")
    return i >= 0 && i <= 65535;
  if (format == "uint32")
    return i >= 0 && i <= 4294967295LL;
  if (format == "uint64")
    return i >= 0;
  return true;
}

}  // namespace

base::Result<OpenApiValidator> OpenApiValidator::Load(const std::string& yaml_path) {
  OpenApiValidator v;
  try {
    v.doc_ = YamlToJson(YAML::LoadFile(yaml_path));
  } catch (const YAML::Exception& e) {
    return base::InvalidArgument("loading " + yaml_path + ": " + e.what());
  }
  if (!v.doc_.contains("components") || !v.doc_["components"].contains("schemas")) {
    return base::InvalidArgument(yaml_path + " has no components.schemas");
  }
  return v;
}

const json* OpenApiValidator::Resolve(const std::string& ref) const {
  const std::string prefix = "#/components/schemas/";
  if (ref.rfind(prefix, 0) != 0) {
    return nullptr;
  }
  const json& schemas = doc_["components"]["schemas"];
  auto it = schemas.find(ref.substr(prefix.size()));
  return it == schemas.end() ? nullptr : &*it;
}

bool OpenApiValidator::HasOperation(const std::string& path, const std::string& method) const {
  return doc_.contains("paths") && doc_["paths"].contains(path) && doc_["paths"][path].contains(method);
}

base::Result<json> OpenApiValidator::RequestSchema(const std::string& path, const std::string& method) const {
  if (!HasOperation(path, method)) {
    return base::NotFound("no operation " + method + " " + path + " in the API document");
  }
  const json& op = doc_["paths"][path][method];
  if (!op.contains("requestBody")) {
    return base::NotFound(method + " " + path + " takes no request body");
  }
  return op["requestBody"]["content"]["application/json"]["schema"];
}

std::vector<std::string> OpenApiValidator::Validate(const json& schema, const json& value, bool strict) const {
  std::vector<std::string> errors;
  Check(schema, value, "$", strict, errors, 0);
  return errors;
}

std::vector<std::string> OpenApiValidator::ValidateNamed(const std::string& schema_name, const json& value,
                                                         bool strict) const {
  return Validate(json{{"$ref", "#/components/schemas/" + schema_name}}, value, strict);
}

void OpenApiValidator::Check(const json& schema, const json& value, const std::string& where, bool strict,
                             std::vector<std::string>& errors, int depth) const {
  if (depth > 64) {
    errors.push_back(where + ": schema nesting too deep");
    return;
  }
  if (schema.contains("$ref")) {
    const json* target = Resolve(schema["$ref"].get<std::string>());
    if (target == nullptr) {
      errors.push_back(where + ": unresolvable $ref " + schema["$ref"].dump());
      return;
    }
    Check(*target, value, where, strict, errors, depth + 1);
    return;
  }
  if (schema.contains("enum")) {
    bool found = false;
    for (const auto& option : schema["enum"]) {
      found = found || option == value;
    }
    if (!found) {
      errors.push_back(where + ": " + value.dump() + " is not one of " + schema["enum"].dump());
    }
  }
  std::string type = schema.value("type", "");
  if (type == "object" || (type.empty() && (schema.contains("properties") || schema.contains("required")))) {
    if (!value.is_object()) {
      errors.push_back(where + ": expected an object, got " + value.dump().substr(0, 60));
      return;
    }
    json props = schema.value("properties", json::object());
    for (const auto& req : schema.value("required", json::array())) {
      if (!value.contains(req.get<std::string>())) {
        errors.push_back(where + ": missing required property \"" + req.get<std::string>() + "\"");
      }
    }
    for (auto it = value.begin(); it != value.end(); ++it) {
      std::string child = where + "." + it.key();
      if (props.contains(it.key())) {
        Check(props[it.key()], it.value(), child, strict, errors, depth + 1);
      } else if (schema.contains("additionalProperties")) {
        const json& extra = schema["additionalProperties"];
        if (extra.is_boolean()) {
          if (!extra.get<bool>()) {
            errors.push_back(child + ": property not allowed");
          }
        } else {
          Check(extra, it.value(), child, strict, errors, depth + 1);
        }
      } else if (strict) {
        errors.push_back(child + ": property not declared by the schema");
      }
    }
  } else if (type == "array") {
    if (!value.is_array()) {
      errors.push_back(where + ": expected an array, got " + value.dump().substr(0, 60));
      return;
    }
    if (schema.contains("items")) {
      for (size_t i = 0; i < value.size(); ++i) {
        Check(schema["items"], value[i], where + "[" + std::to_string(i) + "]", strict, errors, depth + 1);
      }
    }
  } else if (type == "string") {
    if (!value.is_string()) {
      errors.push_back(where + ": expected a string, got " + value.dump().substr(0, 60));
    }
  } else if (type == "boolean") {
    if (!value.is_boolean()) {
      errors.push_back(where + ": expected a boolean, got " + value.dump().substr(0, 60));
    }
  } else if (type == "integer") {
    if (!value.is_number_integer()) {
      errors.push_back(where + ": expected an integer, got " + value.dump().substr(0, 60));
      return;
    }
    std::string format = schema.value("format", "");
    if (!format.empty() && !InRange(value, format)) {
      errors.push_back(where + ": " + value.dump() + " does not fit format " + format);
    }
    if (schema.contains("minimum") && value.get<double>() < schema["minimum"].get<double>()) {
      errors.push_back(where + ": " + value.dump() + " is below the minimum " + schema["minimum"].dump());
    }
    if (schema.contains("maximum") && value.get<double>() > schema["maximum"].get<double>()) {
      errors.push_back(where + ": " + value.dump() + " is above the maximum " + schema["maximum"].dump());
    }
  } else if (type == "number") {
    if (!value.is_number()) {
      errors.push_back(where + ": expected a number, got " + value.dump().substr(0, 60));
    }
  }
}

}  // namespace chrys::runtime::testing
