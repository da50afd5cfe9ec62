// Command herald is Herald's server and command-line tool.
//
//	herald serve [flags]   run the push server
//	herald config print    print the configuration of serve, as YAML
//	herald config check F  check the configuration file F
//	herald health URL      exit 0 if URL answers 2xx (a container health check)
//	herald version         print the version
//	herald help            print usage
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build info is used.
var version = ""

const usage = `Herald is a real-time push server: publish events over HTTP, receive them
over Server-Sent Events or WebSocket.

Usage:
  herald <command> [flags]

Commands:
  serve     run the server (see "herald serve -h" for its flags)
  config    print the configuration of serve, or check a configuration file (see "herald config -h")
  sub       subscribe and print events as JSON lines (see "herald sub -h")
  pub       publish events and print their cursors (see "herald pub -h")
  action    submit an action, optionally wait for its result (see "herald action -h")
  state     print the state of a keyed topic, the latest event of each key (see "herald state -h")
  presence  print the members of a topic's presence and how many clients and users (see "herald presence -h")
  disconnect   disconnect a user's connections, or one connection, cluster-wide (see "herald disconnect -h")
  unsubscribe  remove subscriptions from a user's connections, or from one (see "herald unsubscribe -h")
  bench     load-test a running server (see "herald bench -h")
  token     print a token for a server run with --auth jwt (see "herald token -h")
  health    check that a URL, e.g. a node's /readyz, answers 2xx (see "herald health -h")
  outbox    create a PostgreSQL outbox table for --source (see "herald outbox -h")
  version   print the version
  help      print this help
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// parseFlags parses the flags of a client command (fs is named "herald
// NAME"), which takes no arguments. -h prints usage, then the flags, on
// stdout and returns flag.ErrHelp; a bad flag or an argument is a usage
// error that names the command's -h.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer, usage string) error {
	return parseCommand(fs, args, stdout, usage, "")
}

// parseCommand is parseFlags for a command that takes one argument after
// its flags, named arg (none when arg is empty).
func parseCommand(fs *flag.FlagSet, args []string, stdout io.Writer, usage, arg string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprint(stdout, usage)
			fs.PrintDefaults()
			return err
		}
		return usagef("%v (see \"%s -h\")", err, fs.Name())
	}
	name := strings.TrimPrefix(fs.Name(), "herald ")
	switch {
	case arg == "" && fs.NArg() > 0:
		return usagef("%s takes no arguments, got %q (see \"%s -h\")", name, fs.Arg(0), fs.Name())
	case arg != "" && fs.NArg() != 1:
		return usagef("%s takes one %s after its flags, got %q (see \"%s -h\")", name, arg, fs.Args(), fs.Name())
	}
	return nil
}

// run executes one command and returns the process exit status:
// 0 success, 1 failure at run time, 2 bad command line.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "herald %s %s %s/%s\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		// After the first signal, restore the default handling so that a
		// second Ctrl-C ends a shutdown that takes too long.
		context.AfterFunc(ctx, stop)
		return exitStatus(runServe(ctx, args[1:], stdout, stderr, nil), stderr)
	case "bench":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return exitStatus(runBench(ctx, args[1:], stdout, stderr), stderr)
	case "token":
		return exitStatus(runToken(args[1:], stdout, stderr), stderr)
	case "health":
		return exitStatus(runHealth(context.Background(), args[1:], stdout, stderr), stderr)
	case "config":
		return exitStatus(runConfig(args[1:], os.LookupEnv, stdout), stderr)
	case "outbox":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return exitStatus(runOutbox(ctx, args[1:], stdout, stderr), stderr)
	case "sub", "pub", "action", "state", "presence", "disconnect", "unsubscribe":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		var err error
		switch args[0] {
		case "sub":
			err = runSub(ctx, args[1:], stdout, stderr)
		case "pub":
			err = runPub(ctx, args[1:], os.Stdin, stdout, stderr)
		case "state":
			err = runState(ctx, args[1:], stdout, stderr)
		case "presence":
			err = runPresence(ctx, args[1:], stdout, stderr)
		case "disconnect", "unsubscribe":
			err = runControl(ctx, args[0] == "unsubscribe", args[1:], stdout)
		default:
			err = runAction(ctx, args[1:], stdout, stderr)
		}
		return exitStatus(err, stderr)
	default:
		fmt.Fprintf(stderr, "herald: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// exitStatus reports err on stderr and maps it to an exit status.
func exitStatus(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "herald: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "herald: %v\n", err)
		return 1
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
