package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// validateSchemaFile checks values against the chart's values.schema.json, when there is one, and reports
// every violation as Helm does: one line per value, with its path, what was expected and what was given.
func validateSchemaFile(chartDir, chartName string, values map[string]interface{}) error {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var schema map[string]interface{}
	if err := json.Unmarshal(data, &schema); err != nil {
		return fmt.Errorf("values.schema.json: %v", err)
	}
	v := validator{root: schema}
	v.check(schema, toJSONTypes(values), "(root)")
	if len(v.problems) == 0 {
		return nil
	}
	return fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n- %s",
		chartName, strings.Join(v.problems, "\n- "))
}

// toJSONTypes turns YAML-decoded values into the types encoding/json produces (float64 numbers), so the
// schema checks see one representation.
func toJSONTypes(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		out := map[string]interface{}{}
		for k, item := range t {
			out[k] = toJSONTypes(item)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, item := range t {
			out[i] = toJSONTypes(item)
		}
		return out
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case uint64:
		return float64(t)
	default:
		return v
	}
}

type validator struct {
	root     map[string]interface{}
	problems []string
}

func typeOf(v interface{}) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if t == math.Trunc(t) {
			return "integer"
		}
		return "number"
	case map[string]interface{}:
		return "object"
	case []interface{}:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

func (v *validator) resolve(schema map[string]interface{}) map[string]interface{} {
	ref, ok := schema["$ref"].(string)
	if !ok {
		return schema
	}
	node := interface{}(v.root)
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		m, ok := node.(map[string]interface{})
		if !ok {
			break
		}
		node = m[part]
	}
	if m, ok := node.(map[string]interface{}); ok {
		return v.resolve(m)
	}
	v.problems = append(v.problems, fmt.Sprintf("schema: unresolvable $ref %q", ref))
	return map[string]interface{}{}
}

func (v *validator) fail(where, format string, args ...interface{}) {
	v.problems = append(v.problems, where+": "+fmt.Sprintf(format, args...))
}

func (v *validator) check(schema map[string]interface{}, value interface{}, where string) {
	schema = v.resolve(schema)
	if types, ok := schema["type"]; ok {
		var allowed []string
		switch t := types.(type) {
		case string:
			allowed = []string{t}
		case []interface{}:
			for _, item := range t {
				allowed = append(allowed, fmt.Sprint(item))
			}
		}
		got := typeOf(value)
		match := false
		for _, a := range allowed {
			if a == got || (a == "number" && got == "integer") {
				match = true
			}
		}
		if !match {
			v.fail(where, "Invalid type. Expected: %s, given: %s", strings.Join(allowed, " or "), got)
			return
		}
	}
	if enum, ok := schema["enum"].([]interface{}); ok {
		found := false
		var names []string
		for _, e := range enum {
			names = append(names, fmt.Sprintf("%q", fmt.Sprint(e)))
			if fmt.Sprint(e) == fmt.Sprint(value) && typeOf(e) == typeOf(value) {
				found = true
			}
		}
		if !found {
			v.fail(where, "must be one of the following: %s (given: %v)", strings.Join(names, ", "), value)
		}
	}
	switch t := value.(type) {
	case string:
		if min, ok := schema["minLength"].(float64); ok && float64(len(t)) < min {
			v.fail(where, "String length must be greater than or equal to %v", min)
		}
		if pattern, ok := schema["pattern"].(string); ok {
			if re, err := regexp.Compile(pattern); err != nil {
				v.fail(where, "schema pattern %q does not compile: %v", pattern, err)
			} else if !re.MatchString(t) {
				v.fail(where, "Does not match pattern '%s' (given: %q)", pattern, t)
			}
		}
	case float64:
		if min, ok := schema["minimum"].(float64); ok && t < min {
			v.fail(where, "Must be greater than or equal to %v (given: %v)", min, t)
		}
		if max, ok := schema["maximum"].(float64); ok && t > max {
			v.fail(where, "Must be less than or equal to %v (given: %v)", max, t)
		}
		if pattern, ok := schema["pattern"].(string); ok {
			if re, err := regexp.Compile(pattern); err == nil && !re.MatchString(fmt.Sprint(t)) {
				v.fail(where, "Does not match pattern '%s' (given: %v)", pattern, t)
			}
		}
	case []interface{}:
		if items, ok := schema["items"].(map[string]interface{}); ok {
			for i, item := range t {
				v.check(items, item, fmt.Sprintf("%s.%d", where, i))
			}
		}
	case map[string]interface{}:
		props, _ := schema["properties"].(map[string]interface{})
		if required, ok := schema["required"].([]interface{}); ok {
			for _, r := range required {
				if _, ok := t[fmt.Sprint(r)]; !ok {
					v.fail(where, "%s is required", r)
				}
			}
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			child := k
			if where != "(root)" {
				child = where + "." + k
			}
			if p, ok := props[k].(map[string]interface{}); ok {
				v.check(p, t[k], child)
				continue
			}
			switch extra := schema["additionalProperties"].(type) {
			case bool:
				if !extra {
					var known []string
					for name := range props {
						known = append(known, name)
					}
					sort.Strings(known)
					v.fail(where, "Additional property %s is not allowed (known: %s)", k, strings.Join(known, ", "))
				}
			case map[string]interface{}:
				v.check(extra, t[k], child)
			}
		}
	}
}
