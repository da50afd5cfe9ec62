package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// configFlag names the serve flag (and, through envName, the variable
// HERALD_CONFIG) that points at a configuration file.
const configFlag = "config"

// Where a flag's effective value came from, lowest precedence first. An
// environment variable is reported as "env HERALD_X".
const (
	fromDefault = "default"
	fromFile    = "file"
	fromFlag    = "flag"
)

// setting is one serve flag's effective value once every layer is applied,
// kept for "herald config print".
type setting struct {
	name   string
	value  string // as the flag.Value's String method returns it
	kind   valueKind
	source string // fromDefault, fromFile, "env HERALD_X" or fromFlag
}

// valueKind says how a flag's value is written in YAML.
type valueKind int

const (
	kindString   valueKind = iota
	kindList               // a comma-separated list: a YAML sequence
	kindBool               // a YAML boolean
	kindNumber             // a YAML integer or float
	kindDuration           // a Go duration string such as 30s
)

// fileValue is one key of a configuration file, with its value in the form
// a flag.Value's Set takes.
type fileValue struct {
	name  string
	value string
	line  int
}

// applyConfigSources fills the flags of fs that are absent from the command
// line (fs has parsed it) from the configuration file, then from the
// environment, so that a flag wins over the environment, which wins over
// the file. The file is --config, else the variable HERALD_CONFIG; every
// value, whatever its layer, goes through fs.Set, so it is checked exactly
// as the same value given as a flag. An empty variable counts as unset.
//
// Every value of the file is set, even one that the environment then
// replaces, so that a bad file is an error whatever the environment; a
// flag on the command line replaces the file's value unread.
//
// It returns every flag with its value and source, in the order of
// fs.VisitAll. Its errors are usage errors.
func applyConfigSources(fs *flag.FlagSet, getenv func(string) (string, bool)) ([]setting, error) {
	source := make(map[string]string)
	fs.Visit(func(f *flag.Flag) { source[f.Name] = fromFlag })

	var path string
	via := "--" + configFlag
	if f := fs.Lookup(configFlag); f != nil {
		path = f.Value.String()
		if source[configFlag] == "" {
			if v, ok := getenv(envName(configFlag)); ok && v != "" {
				path, via = v, envName(configFlag)
				_ = fs.Set(configFlag, v) // a string flag takes any value
				source[configFlag] = "env " + via
			}
		}
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, usagef("%s: %v", via, err)
		}
		values, err := parseConfigFile(path, data, fs)
		if err != nil {
			return nil, err
		}
		for _, v := range values {
			if source[v.name] == fromFlag {
				continue
			}
			if err := fs.Set(v.name, v.value); err != nil {
				return nil, usagef("%s:%d: invalid value %q for %s: %v", path, v.line, v.value, v.name, err)
			}
			source[v.name] = fromFile
		}
	}

	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == configFlag || source[f.Name] == fromFlag || envErr != nil {
			return
		}
		name := envName(f.Name)
		if v, ok := getenv(name); ok && v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = usagef("invalid value %q for %s: %v", v, name, err)
				return
			}
			source[f.Name] = "env " + name
		}
	})
	if envErr != nil {
		return nil, envErr
	}

	var settings []setting
	fs.VisitAll(func(f *flag.Flag) {
		src := source[f.Name]
		if src == "" {
			src = fromDefault
		}
		settings = append(settings, setting{name: f.Name, value: f.Value.String(), kind: kindOf(f), source: src})
	})
	return settings, nil
}

// kindOf tells how f's value is written in YAML, from the type of the
// value behind it: a listValue is a list.
func kindOf(f *flag.Flag) valueKind {
	var v any = f.Value.String()
	if g, ok := f.Value.(flag.Getter); ok {
		v = g.Get()
	}
	switch v.(type) {
	case bool:
		return kindBool
	case int, int64, uint, uint64, float64:
		return kindNumber
	case time.Duration:
		return kindDuration
	case []string:
		return kindList
	}
	return kindString
}

// listValue is the flag.Value of a flag that takes a comma-separated list.
// Its Get returns the items, which is what makes a configuration file give
// the flag as a YAML sequence and "herald config print" write it as one.
type listValue string

func (l *listValue) String() string     { return string(*l) }
func (l *listValue) Set(s string) error { *l = listValue(s); return nil }
func (l *listValue) Get() any           { return listItems(string(*l)) }

// sourceList is the flag.Value of --source: each use adds its URLs, and
// a value may hold several separated by spaces (a URL has none, but may
// have commas: a PostgreSQL URL with several hosts), which is how the
// environment and a configuration file give more than one.
type sourceList []string

func (l *sourceList) String() string { return strings.Join(*l, " ") }
func (l *sourceList) Set(s string) error {
	*l = append(*l, strings.Fields(s)...)
	return nil
}

// listItems splits a comma-separated list into its items, each trimmed of
// spaces, leaving out empty ones.
func listItems(s string) []string {
	var items []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

// parseConfigFile parses a configuration file: one YAML mapping whose keys
// are the names of fs's flags (but --config) and whose values are scalars,
// or sequences for the flags that take a comma-separated list. It returns
// the values in the order of the file, without setting them. An empty file,
// or one of only comments, has no values.
//
// Its errors are usage errors that start with name and the line at fault.
func parseConfigFile(name string, data []byte, fs *flag.FlagSet) ([]fileValue, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, usagef("%s: %v", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, usagef("%s: want one YAML document, found more", name)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" { // "---" alone
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, usagef("%s:%d: want a mapping of flag names to values, like history-size: 20000", name, root.Line)
	}

	var values []fileValue
	firstLine := make(map[string]int)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		at := fmt.Sprintf("%s:%d", name, k.Line)
		if k.Kind != yaml.ScalarNode {
			return nil, usagef("%s: a key must be a flag name", at)
		}
		key := k.Value
		if key == configFlag {
			return nil, usagef("%s: %q cannot be set in a configuration file (use --config or %s)", at, key, envName(configFlag))
		}
		f := fs.Lookup(key)
		if f == nil {
			if s := closestFlag(key, fs); s != "" {
				return nil, usagef("%s: unknown key %q (did you mean %q?)", at, key, s)
			}
			return nil, usagef("%s: unknown key %q (the keys are the flags of \"herald serve -h\")", at, key)
		}
		if first, ok := firstLine[key]; ok {
			return nil, usagef("%s: %s is set twice (first on line %d)", at, key, first)
		}
		firstLine[key] = k.Line
		value, err := flagText(v, kindOf(f) == kindList)
		if err != nil {
			return nil, usagef("%s: %s: %v", at, key, err)
		}
		values = append(values, fileValue{name: key, value: value, line: k.Line})
	}
	return values, nil
}

// flagText turns a YAML value into the text that the flag's Set takes: a
// scalar as written, a sequence (if list) as its items joined with commas.
func flagText(v *yaml.Node, list bool) (string, error) {
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", errors.New(`no value (write "" for an empty string)`)
		}
		return v.Value, nil
	case yaml.SequenceNode:
		if !list {
			return "", errors.New("want a single value, not a list")
		}
		items := make([]string, 0, len(v.Content))
		for _, item := range v.Content {
			if item.Kind == yaml.AliasNode && item.Alias != nil {
				item = item.Alias
			}
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return "", fmt.Errorf("line %d: a list item must be a single value", item.Line)
			}
			// The flag splits on commas: an item with one would
			// silently become two.
			if strings.Contains(item.Value, ",") {
				return "", fmt.Errorf("line %d: list item %q holds a comma; give each value as an item of its own", item.Line, item.Value)
			}
			items = append(items, item.Value)
		}
		return strings.Join(items, ","), nil
	case yaml.MappingNode:
		return "", errors.New("want a value, not a nested mapping")
	default:
		return "", errors.New("want a value")
	}
}

// closestFlag returns the flag name of fs nearest to key, if it is at most
// two edits away once case and "_" against "-" are disregarded; else "".
func closestFlag(key string, fs *flag.FlagSet) string {
	norm := strings.ReplaceAll(strings.ToLower(key), "_", "-")
	best, bestDist := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == configFlag {
			return
		}
		if d := editDistance(norm, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
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
