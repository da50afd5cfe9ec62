package main

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// masked replaces a secret in the output of "herald config print".
const masked = "****"

// secretFlags mask the secrets in the value of a flag that may hold one.
var secretFlags = map[string]func(string) string{
	"jwt-secret":      maskAll,
	"api-key":         maskAll,
	"broker":          maskURLPasswords, // a Redis URL or a NATS server list
	"jwt-jwks-url":    maskURLPasswords,
	"action-upstream": maskURLPasswords, // URL and TYPE=URL entries
	"auth-upstream":   maskURLPasswords,
	"source":          maskSources,
}

func maskAll(s string) string {
	if s == "" {
		return ""
	}
	return masked
}

// maskURLPasswords masks the userinfo of every comma-separated URL in s,
// found as net/url finds it: in the authority, before the last "@". A
// password becomes ****, and a user without a password does too, since
// NATS reads it as a token. Everything else stays as written, so the URL
// still says where it points. An entry without "scheme://" (a NATS server
// such as user:pw@host:4222, or TYPE=URL) is masked the same way.
func maskURLPasswords(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = maskUserinfo(p)
	}
	return strings.Join(parts, ",")
}

// maskSources masks each of the space-separated URLs of --source: the
// userinfo's password, as maskURLPasswords, and a password given as the
// query parameter PostgreSQL also reads (password=…).
func maskSources(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		fields[i] = queryPassword.ReplaceAllString(maskURLPasswords(f), "${1}"+masked)
	}
	return strings.Join(fields, " ")
}

// queryPassword finds a password given as a URL's query parameter.
var queryPassword = regexp.MustCompile(`([?&]password=)[^&#]*`)

func maskUserinfo(u string) string {
	start := 0
	if i := strings.Index(u, "://"); i >= 0 {
		start = i + len("://")
	}
	end := len(u)
	if i := strings.IndexAny(u[start:], "/?#"); i >= 0 {
		end = start + i
	}
	at := strings.LastIndex(u[start:end], "@")
	if at < 0 {
		return u
	}
	at += start
	if user, _, ok := strings.Cut(u[start:at], ":"); ok {
		return u[:start] + user + ":" + masked + u[at:]
	}
	return u[:start] + masked + u[at:]
}

// printConfig writes settings as a YAML configuration file that --config
// takes back: every setting, in order, with its source as a comment, and
// its secrets masked (see secretFlags). Read back, it gives the same
// configuration but for the masked secrets. The --config setting itself,
// which a file cannot hold, is named in the heading.
func printConfig(w io.Writer, settings []setting) error {
	var from string
	lines := make([]string, len(settings))
	width := 0
	for i, s := range settings {
		if s.name == configFlag {
			if s.value != "" {
				via := "--" + configFlag
				if s.source != fromFlag {
					via = strings.TrimPrefix(s.source, "env ")
				}
				from = s.value + " from " + via
			}
			continue
		}
		if mask := secretFlags[s.name]; mask != nil {
			s.value = mask(s.value)
		}
		v, err := yamlValue(s)
		if err != nil {
			return fmt.Errorf("failed to print %s: %w", s.name, err)
		}
		lines[i] = s.name + ": " + v
		width = max(width, len(lines[i]))
	}
	// Comments line up unless a long value would push them all far out.
	width = min(width, 48)

	var b bytes.Buffer
	b.WriteString("# The effective configuration of herald serve")
	if from != "" {
		fmt.Fprintf(&b, " (file %s)", from)
	}
	b.WriteString(".\n# After each value, where it came from: default, file, env HERALD_… or flag.\n" +
		"# Secrets are masked as " + masked + ".\n")
	for i, s := range settings {
		if s.name != configFlag {
			fmt.Fprintf(&b, "%-*s  # %s\n", width, lines[i], s.source)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// yamlValue writes a setting's value as the YAML of one line that
// flagText turns back into the same value.
func yamlValue(s setting) (string, error) {
	if !utf8.ValidString(s.value) {
		return "", fmt.Errorf("%q is not UTF-8, which YAML cannot hold", s.value)
	}
	var n *yaml.Node
	switch s.kind {
	case kindBool, kindNumber:
		n = &yaml.Node{Kind: yaml.ScalarNode, Value: s.value}
	case kindDuration:
		n = str(shortDuration(s.value))
	case kindList:
		n = &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, item := range listItems(s.value) {
			n.Content = append(n.Content, str(item))
		}
	default:
		n = str(s.value)
	}
	out, err := yaml.Marshal(n)
	if err != nil {
		return "", err
	}
	text := strings.TrimSuffix(string(out), "\n")
	if strings.Contains(text, "\n") {
		// A string with a line break: on one line, escaped.
		scalars := n.Content
		if n.Kind == yaml.ScalarNode {
			scalars = []*yaml.Node{n}
		}
		for _, sc := range scalars {
			sc.Style = yaml.DoubleQuotedStyle
		}
		if out, err = yaml.Marshal(n); err != nil {
			return "", err
		}
		text = strings.TrimSuffix(string(out), "\n")
	}
	return text, nil
}

// str is a YAML string, quoted when it would otherwise read as another
// type or as YAML syntax.
func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// shortDuration writes 1h0m0s as 1h and 5m0s as 5m, as people write them.
func shortDuration(s string) string {
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
