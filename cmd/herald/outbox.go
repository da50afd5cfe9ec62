package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/heraldpush/herald/outbox"
)

const outboxUsage = `Usage: herald outbox init [--print] SOURCE
       herald outbox sql [--table NAME]

init creates the outbox table named by SOURCE, a --source URL such as
postgres://postgres@127.0.0.1:5432/app?table=herald_outbox, with its
dead-letter table and the trigger that wakes Herald when rows are
committed. It is idempotent. sql prints the same statements, to review or
to put into the application's migrations (see docs/outbox.md).

Flags:
`

// runOutbox runs "herald outbox init|sql".
func runOutbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "init" && args[0] != "sql") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, outboxUsage)
			return flag.ErrHelp
		}
		return usagef("outbox takes init or sql (see \"herald outbox -h\")")
	}
	if args[0] == "sql" {
		fs := flag.NewFlagSet("herald outbox sql", flag.ContinueOnError)
		table := fs.String("table", outbox.DefaultTable, "the outbox table, NAME or SCHEMA.NAME")
		if err := parseFlags(fs, args[1:], stdout, outboxUsage); err != nil {
			return err
		}
		t, err := outbox.ParseTable(*table)
		if err != nil {
			return usagef("--table: %v", err)
		}
		fmt.Fprint(stdout, t.SQL())
		return nil
	}
	fs := flag.NewFlagSet("herald outbox init", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "the longest init may take")
	if err := parseCommand(fs, args[1:], stdout, outboxUsage, "SOURCE"); err != nil {
		return err
	}
	src := fs.Arg(0)
	st, err := outbox.ParseURL(src)
	if err != nil {
		return usagef("%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := outbox.Init(ctx, src, st.Table); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "outbox %s ready in %s\n", st.Table, strings.TrimPrefix(outbox.Redact(src), "postgres://"))
	return nil
}
