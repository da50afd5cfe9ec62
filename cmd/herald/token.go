package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/hub"
)

// runToken prints a signed HS256 token for a server run with --auth jwt
// --jwt-secret: for trying Herald out and for tests. Production tokens come
// from the application's own identity service.
func runToken(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secret := fs.String("secret", "", "the server's --jwt-secret (required; also HERALD_JWT_SECRET)")
	sub := fs.String("sub", "", "the token's subject, e.g. a user id (required)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	subscribe := fs.String("subscribe", "", "comma-separated patterns the token may subscribe to")
	publish := fs.String("publish", "", "comma-separated patterns of topics the token may publish to")
	actions := fs.String("actions", "", "comma-separated patterns of action types the token may submit")
	audience := fs.String("audience", "", "aud claim, for a server with --jwt-audience")
	issuer := fs.String("issuer", "", "iss claim, for a server with --jwt-issuer")
	admin := fs.Bool("admin", false, "let the token use the control API (herald disconnect, herald unsubscribe): \"herald\":{\"admin\":true}")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: herald token --secret SECRET --sub SUBJECT [--subscribe P,…] [--publish P,…] [--actions P,…] [--admin]\n\n"+
			"Prints an HS256 token with Herald's grants, for a server run with --auth jwt --jwt-secret SECRET.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if *secret == "" {
		*secret = os.Getenv("HERALD_JWT_SECRET")
	}
	switch {
	case fs.NArg() > 0:
		return usagef("token takes no arguments, got %q", fs.Args())
	case len(*secret) < 32:
		return usagef("--secret must be the server's --jwt-secret, at least 32 bytes")
	case *sub == "":
		return usagef("--sub is required")
	case *ttl <= 0:
		return usagef("--ttl must be positive, got %v", *ttl)
	}
	grants := map[string]any{}
	for name, raw := range map[string]string{"subscribe": *subscribe, "publish": *publish, "actions": *actions} {
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			if _, err := hub.ParsePattern(p); err != nil {
				return usagef("--%s: %v", name, err)
			}
			ps, _ := grants[name].([]string)
			grants[name] = append(ps, p)
		}
	}
	if *admin {
		grants["admin"] = true
	}
	now := time.Now()
	claims := jwt.MapClaims{"sub": *sub, "iat": now.Unix(), "exp": now.Add(*ttl).Unix(), "herald": grants}
	if *audience != "" {
		claims["aud"] = *audience
	}
	if *issuer != "" {
		claims["iss"] = *issuer
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(*secret))
	if err != nil {
		return fmt.Errorf("failed to sign the token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
