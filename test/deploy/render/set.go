package main

import (
	"fmt"
	"strconv"
	"strings"
)

// applySet applies one --set argument ("a.b=1,c.d={x,y}") to values. Keys may escape '.' and ',' with a
// backslash ("nodeSelector.kubernetes\.io/os=linux"). As in Helm, unless asString is set, true/false become
// booleans, null deletes, decimal integers become integers and everything else stays a string.
func applySet(values map[string]interface{}, arg string, asString bool) error {
	for _, assignment := range splitUnescaped(arg, ',', true) {
		eq := indexUnescaped(assignment, '=')
		if eq <= 0 {
			return fmt.Errorf("key %q has no value (expected key=value)", assignment)
		}
		keys := splitUnescaped(assignment[:eq], '.', false)
		for _, k := range keys {
			if k == "" {
				return fmt.Errorf("key %q has an empty part", assignment[:eq])
			}
			if strings.ContainsAny(k, "[]") {
				return fmt.Errorf("key %q: list indices are not supported by this renderer", assignment[:eq])
			}
		}
		value := typedValue(unescape(assignment[eq+1:]), asString)
		if raw := assignment[eq+1:]; !asString && strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}") {
			var list []interface{}
			for _, item := range splitUnescaped(raw[1:len(raw)-1], ';', false) {
				list = append(list, typedValue(item, false))
			}
			value = list
		}
		node := values
		for _, k := range keys[:len(keys)-1] {
			next, ok := node[k].(map[string]interface{})
			if !ok {
				next = map[string]interface{}{}
				node[k] = next
			}
			node = next
		}
		last := keys[len(keys)-1]
		if value == nil {
			delete(node, last)
		} else {
			node[last] = value
		}
	}
	return nil
}

func typedValue(text string, asString bool) interface{} {
	if asString {
		return text
	}
	switch text {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if n, err := strconv.ParseInt(text, 10, 64); err == nil && (text == "0" || !strings.HasPrefix(text, "0")) {
		return int(n)
	}
	return text
}

// splitUnescaped splits on sep outside "\x" escapes. With braces set, separators inside {...} do not split
// and commas inside braces are turned into ';' for the list parser.
func splitUnescaped(s string, sep byte, braces bool) []string {
	var parts []string
	var cur strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(c)
			cur.WriteByte(s[i+1])
			i++
		case braces && c == '{':
			depth++
			cur.WriteByte(c)
		case braces && c == '}':
			depth--
			cur.WriteByte(c)
		case c == sep && depth > 0:
			cur.WriteByte(';')
		case c == sep:
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	parts = append(parts, cur.String())
	if sep == '.' {
		for i := range parts {
			parts[i] = unescape(parts[i])
		}
	}
	return parts
}

func indexUnescaped(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == c {
			return i
		}
	}
	return -1
}

func unescape(s string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		out.WriteByte(s[i])
	}
	return out.String()
}
