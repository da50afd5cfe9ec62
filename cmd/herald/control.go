package main

import (
	"context"
	"flag"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/client"
)

const disconnectUsage = `Usage: herald disconnect (--user SUB | --client ID) [flags]

Disconnects every connection of a user (a token's sub) or the one connection
with that ID, on every node of the cluster (POST /v1/disconnect), and prints how
many connections the node that took the call closed. A WebSocket is closed with
4001 "disconnected"; an SSE stream ends.

It needs the server's --api-key (--api-key, or HERALD_API_KEY) or a token
with "herald":{"admin":true} (--token; see "herald token --admin").

Exit status: 0 done, 1 an error (message on stderr), 2 bad flags.

Flags:
`

const unsubscribeUsage = `Usage: herald unsubscribe (--user SUB | --client ID) --topics PATTERN,... [flags]

Removes those subscriptions (patterns as the connections wrote them) from every
connection of a user or from one connection, on every node of the cluster
(POST /v1/unsubscribe), and prints how many connections of the node that took
the call lost one. A WebSocket gets {"op":"unsubscribed","topics":[...]}, an SSE
stream the event herald.unsubscribed.

It needs the server's --api-key (--api-key, or HERALD_API_KEY) or a token
with "herald":{"admin":true} (--token; see "herald token --admin").

Exit status: 0 done, 1 an error (message on stderr), 2 bad flags.

Flags:
`

// runControl runs "herald disconnect" (unsubscribe false) and "herald
// unsubscribe": one call of the control API, printing its count.
func runControl(ctx context.Context, unsubscribe bool, args []string, stdout io.Writer) error {
	var rawURL, token, apiKey, user, clientID, topics string
	var timeout time.Duration
	name, usage := "disconnect", disconnectUsage
	if unsubscribe {
		name, usage = "unsubscribe", unsubscribeUsage
	}
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.StringVar(&rawURL, "url", "http://127.0.0.1:8080", "server base `URL`")
	fs.StringVar(&token, "token", "", "admin `JWT` sent as Authorization: Bearer")
	fs.StringVar(&apiKey, "api-key", "", "the server's API `KEY`, sent as X-API-Key (default $HERALD_API_KEY)")
	fs.StringVar(&user, "user", "", "the user (a token's `SUB`) whose connections to act on")
	fs.StringVar(&clientID, "client", "", "the connection `ID` to act on (Herald-Client, or the \"client\" of a WebSocket subscribe reply)")
	if unsubscribe {
		fs.StringVar(&topics, "topics", "", "comma-separated `PATTERNS` to remove, as the connections wrote them")
	}
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "time limit of the request")
	if err := parseFlags(fs, args, stdout, usage); err != nil {
		return err
	}
	base, err := parseBaseURL(rawURL)
	if err != nil {
		return err
	}
	if apiKey == "" && token == "" {
		apiKey = os.Getenv("HERALD_API_KEY")
	}
	var target client.Target
	switch {
	case (user == "") == (clientID == ""):
		return usagef("give --user or --client (one of them)")
	case user != "":
		target.User = user
	default:
		target.Client = clientID
	}
	var pats []string
	if unsubscribe {
		for _, p := range strings.Split(topics, ",") {
			if p = strings.TrimSpace(p); p != "" {
				pats = append(pats, p)
			}
		}
		if len(pats) == 0 {
			return usagef("--topics is required")
		}
	}
	switch {
	case timeout <= 0:
		return usagef("--timeout must be positive")
	case apiKey != "" && token != "":
		return usagef("give --api-key or --token, not both")
	case apiKey == "" && token == "":
		return usagef("give --api-key (or set HERALD_API_KEY) or an admin --token")
	}
	c, err := dialAPI(ctx, base, token, apiKey, timeout)
	if err != nil {
		return commandError(base, err)
	}
	defer c.Close()
	var n int
	if unsubscribe {
		n, err = c.Unsubscribe(ctx, target, pats)
	} else {
		n, err = c.Disconnect(ctx, target)
	}
	if err != nil {
		return commandError(base, err)
	}
	return printLines(stdout, []string{strconv.Itoa(n)})
}
