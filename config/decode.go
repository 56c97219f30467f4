package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The file is decoded by walking yaml.v3 nodes into the Config structs with reflection, rather
// than with yaml.Unmarshal or viper, so that every problem is reported with its line and field
// path and decoding goes on after a mistake.

// defaulter is implemented by sections whose defaults are set when the section is created, before
// the file's values are decoded into it.
type defaulter interface{ setDefaults() }

type decoder struct {
	r   *report
	loc *locations
}

// decodeFile parses data (the contents of file) into c, reporting problems to r.
func decodeFile(c *Config, data []byte, r *report) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return // an empty file: all defaults
		}
		yamlProblem(r, err)
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		r.at(r.loc.file, extra.Line, "", "a second YAML document (after ---): keep the whole configuration in one document")
	} else if !errors.Is(err, io.EOF) {
		yamlProblem(r, err)
	}
	if len(doc.Content) == 0 {
		return
	}
	d := &decoder{r: r, loc: r.loc}
	d.value(doc.Content[0], reflect.ValueOf(c).Elem(), "")
}

// yamlProblem turns a yaml.v3 parse error into a problem. yaml.v3 places some errors at the start
// of the enclosing block rather than at the offending line; the message says so.
func yamlProblem(r *report, err error) {
	line, text := splitYAMLError(err)
	if strings.HasPrefix(text, "did not find expected") {
		text += " (in the block that starts here: look below for a line indented differently or a bracket or quote left open)"
	}
	r.at(r.loc.file, line, "", "invalid YAML: %s", text)
}

// splitYAMLError splits yaml.v3's "yaml: line 3: did not find …" into 3 and the rest.
func splitYAMLError(err error) (line int, text string) {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if num, msg, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				return n, msg
			}
		}
	}
	return 0, s
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	n = resolveAlias(n)
	t := v.Type()
	if t == reflect.TypeFor[yaml.Node]() {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if isNull(n) {
		return // an empty value keeps the default
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			nv := reflect.New(t.Elem())
			if df, ok := nv.Interface().(defaulter); ok {
				df.setDefaults()
			}
			v.Set(nv)
		}
		d.value(n, v.Elem(), path)
	case reflect.Struct:
		d.mapping(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path)
	default:
		if n.Kind != yaml.ScalarNode {
			d.r.at(d.loc.file, n.Line, path, "must be %s, not %s", typeDesc(t), nodeDesc(n))
			return
		}
		if err := setScalar(v, n.Value); err != nil {
			d.r.at(d.loc.file, n.Line, path, "%v", err)
		}
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.r.at(d.loc.file, n.Line, path, "must be a mapping of %s, not %s", strings.Join(fieldNames(v.Type()), ", "), nodeDesc(n))
		return
	}
	d.pairs(n, v, path, map[string]int{})
}

func (d *decoder) pairs(n *yaml.Node, v reflect.Value, path string, seen map[string]int) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolveAlias(n.Content[i]), n.Content[i+1]
		if k.Tag == "!!merge" { // <<: *anchor
			m := resolveAlias(val)
			switch m.Kind {
			case yaml.MappingNode:
				d.pairs(m, v, path, seen)
			case yaml.SequenceNode:
				for _, item := range m.Content {
					if item = resolveAlias(item); item.Kind == yaml.MappingNode {
						d.pairs(item, v, path, seen)
					}
				}
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.r.at(d.loc.file, k.Line, path, "keys must be plain names, not %s", nodeDesc(k))
			continue
		}
		key := k.Value
		p := joinPath(path, key)
		if first, dup := seen[key]; dup {
			d.r.at(d.loc.file, k.Line, p, "set twice (first on line %d): remove one", first)
			continue
		}
		seen[key] = k.Line
		idx, ok := fieldIndex(v.Type(), key)
		if !ok {
			d.r.at(d.loc.file, k.Line, p, "%s", unknownKey(v.Type(), path, key))
			continue
		}
		d.loc.lines[p] = k.Line
		d.value(val, v.Field(idx), p)
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	if n.Kind != yaml.SequenceNode {
		d.r.at(d.loc.file, n.Line, path, "must be a list (items on lines starting with \"- \", or [a, b]), not %s", nodeDesc(n))
		return
	}
	s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
	for i, item := range n.Content {
		p := indexPath(path, i)
		d.loc.lines[p] = item.Line
		e := s.Index(i)
		if df, ok := e.Addr().Interface().(defaulter); ok {
			df.setDefaults()
		}
		d.value(item, e, p)
	}
	v.Set(s)
}

// setScalar parses text into v, a leaf setting. The error says what is wrong and what to write.
func setScalar(v reflect.Value, text string) error {
	switch v.Type() {
	case reflect.TypeFor[time.Duration]():
		dur, err := parseDuration(text)
		if err != nil {
			return err
		}
		v.SetInt(int64(dur))
		return nil
	case reflect.TypeFor[Size]():
		sz, err := parseSize(text)
		if err != nil {
			return err
		}
		v.SetInt(int64(sz))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(text)
	case reflect.Bool:
		switch strings.ToLower(strings.TrimSpace(text)) {
		case "true", "yes", "on", "1":
			v.SetBool(true)
		case "false", "no", "off", "0":
			v.SetBool(false)
		default:
			return fmt.Errorf("must be true or false, got %q", text)
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		i, err := strconv.ParseInt(strings.TrimSpace(text), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("must be a whole number, got %q", text)
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		u, err := strconv.ParseUint(strings.TrimSpace(text), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("must be a whole number, not negative, got %q", text)
		}
		v.SetUint(u)
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
		if err != nil {
			return fmt.Errorf("must be a number, got %q", text)
		}
		v.SetFloat(f)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from text")
		}
		var items []string
		for _, s := range strings.Split(text, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("cannot be set from text")
	}
	return nil
}

func parseDuration(text string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(text))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: use a number with a unit (ms, s, m, h), e.g. 500ms, 30s, 5m or 72h", text)
	}
	return d, nil
}

// fieldIndex finds the field of struct type t with the YAML name key.
func fieldIndex(t reflect.Type, key string) (int, bool) {
	for i := 0; i < t.NumField(); i++ {
		if name, ok := yamlName(t.Field(i)); ok && name == key {
			return i, true
		}
	}
	return 0, false
}

func yamlName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" || name == "-" {
		return "", false
	}
	return name, true
}

func fieldNames(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if name, ok := yamlName(t.Field(i)); ok {
			names = append(names, name)
		}
	}
	return names
}

func unknownKey(t reflect.Type, path, key string) string {
	switch {
	case t == reflect.TypeFor[ChannelsConfig]():
		return fmt.Sprintf("unknown channel %q: use whatsapp or teams", key)
	case key == "master_keys" && (path == "security" || path == ""):
		return "master key material does not belong in the config file: put it in a file named by security.master_keys_file (mode 0600) or in the SWITCHBOARD_MASTER_KEYS environment variable"
	case key == "api_keys_file" && t == reflect.TypeFor[TenantConfig]():
		return "API keys are kept (as hashes) in the store, not in a file: create one with `switchboard keys create --tenant <id>`"
	}
	known := fieldNames(t)
	msg := fmt.Sprintf("unknown key %q", key)
	if s := closest(key, known); s != "" {
		return msg + fmt.Sprintf(": did you mean %q?", s)
	}
	// A setting that belongs one level down (tenant_id directly on a Teams account).
	for i := 0; i < t.NumField(); i++ {
		name, ok := yamlName(t.Field(i))
		ft := t.Field(i).Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if !ok || ft.Kind() != reflect.Struct || ft == reflect.TypeFor[yaml.Node]() {
			continue
		}
		if _, found := fieldIndex(ft, key); found {
			return msg + fmt.Sprintf(": it belongs under %s (%s.%s)", name, name, key)
		}
	}
	return msg + ": known keys here are " + strings.Join(known, ", ")
}

// closest returns the known name nearest to key, if it is near enough to be a typo.
func closest(key string, known []string) string {
	best, bestDist := "", 0
	for _, k := range known {
		if strings.HasPrefix(k, strings.ToLower(key)+"_") { // creds → creds_file
			return k
		}
		d := editDistance(strings.ToLower(key), k)
		if best == "" || d < bestDist {
			best, bestDist = k, d
		}
	}
	limit := 2
	if len(key) <= 4 {
		limit = 1
	}
	if best != "" && bestDist <= limit {
		return best
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func typeDesc(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "a duration such as 30s"
	case reflect.TypeFor[Size]():
		return "a size such as 1MiB"
	}
	switch t.Kind() {
	case reflect.String:
		return "a text value"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list"
	}
	return "a mapping"
}

func nodeDesc(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "this value"
}
