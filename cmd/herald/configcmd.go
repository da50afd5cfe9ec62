package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
)

const configUsage = `Usage:
  herald config print [serve flags]   print the configuration that "herald serve" with
                                      these flags would run with, as a YAML file for --config
  herald config check FILE            check a configuration file as "herald serve --config FILE"
                                      would read it, without connecting to anything

Both read the HERALD_* environment variables as "herald serve" does. Secrets are
printed masked as ****. See docs/operations.md, "Configuration".
`

// runConfig runs "herald config": print or check. It writes its results and
// help to stdout; its errors are usage errors (exit status 2), but for a
// failure to write.
func runConfig(args []string, getenv func(string) (string, bool), stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("config needs a command, print or check\n\n%s", configUsage)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		_, err := io.WriteString(stdout, configUsage)
		return err
	case "print":
		return configPrint(args[1:], getenv, stdout)
	case "check":
		return configCheck(args[1:], getenv, stdout)
	default:
		return usagef("unknown config command %q\n\n%s", args[0], configUsage)
	}
}

// configPrint prints the effective configuration of serve with args.
func configPrint(args []string, getenv func(string) (string, bool), stdout io.Writer) error {
	var help bytes.Buffer
	c, err := parseServeFlags(args, getenv, &help)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, "herald config print takes the flags of herald serve, and prints the configuration\n"+
			"they give as YAML, each value with where it came from.\n\n")
		_, err := stdout.Write(help.Bytes())
		if err != nil {
			return err
		}
		return flag.ErrHelp
	}
	if err != nil {
		return err
	}
	return printConfig(stdout, c.settings)
}

// configCheck loads the file of args[0] as serve would, and validates
// what it gives with everything serve checks before it connects to its
// broker and listens.
func configCheck(args []string, getenv func(string) (string, bool), stdout io.Writer) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		_, err := io.WriteString(stdout, configUsage)
		if err != nil {
			return err
		}
		return flag.ErrHelp
	}
	if len(args) != 1 || args[0] == "" {
		return usagef("config check takes one file, got %q (see \"herald config -h\")", args)
	}
	file := args[0]
	c, err := parseServeFlags([]string{"--" + configFlag, file}, getenv, io.Discard)
	if err != nil {
		return err
	}
	if err := c.preflight(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s: ok\n", file)
	return err
}

// preflight runs the checks of runServe that come before it connects or
// listens: the JWT keys (reading --jwt-public-key; the --jwt-jwks-url is
// checked, not fetched) and the broker URL. The
// --action-upstream URLs need nothing beyond parseServeFlags' checks.
func (c *serveConfig) preflight() error {
	if err := c.server(nil).Check(); err != nil {
		return usagef("%v", err)
	}
	return nil
}
