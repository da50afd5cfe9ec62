package server

import (
	"os"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/auth"
)

// authenticator builds the verifier of Auth "jwt" or "upstream" (nil for
// "none"), its JWKS if JWTJWKSURL is set (not started, the caller starts
// it) and its auth upstream if AuthUpstream is (the caller closes it).
func (c *Config) authenticator() (*auth.Authenticator, *auth.JWKS, *auth.Upstream, error) {
	if c.Auth != "jwt" && c.Auth != "upstream" {
		return nil, nil, nil, nil
	}
	cfg := auth.Config{
		Secret: []byte(c.JWTSecret), Audience: c.JWTAudience, Issuer: c.JWTIssuer, Leeway: c.JWTLeeway,
		PublicSubscribe: c.PublicSubscribe, APIKey: c.APIKey,
		// The pages that may open WebSockets or use the API: those named
		// exactly may also authenticate with the herald_token cookie.
		CookieOrigins: c.AllowedOrigins,
	}
	if c.JWTPublicKey != "" {
		pemBytes, err := os.ReadFile(c.JWTPublicKey)
		if err != nil {
			return nil, nil, nil, configErrorf("--jwt-public-key: %v", err)
		}
		if k, err := jwt.ParseRSAPublicKeyFromPEM(pemBytes); err == nil {
			cfg.PublicKey = k
		} else if k, err := jwt.ParseECPublicKeyFromPEM(pemBytes); err == nil {
			cfg.PublicKey = k
		} else {
			return nil, nil, nil, configErrorf("--jwt-public-key: %s holds no PEM RSA or ECDSA public key", c.JWTPublicKey)
		}
	}
	if c.JWTJWKSURL != "" {
		j, err := auth.NewJWKS(auth.JWKSOptions{URL: c.JWTJWKSURL, Logger: c.Logger})
		if err != nil {
			return nil, nil, nil, configErrorf("--jwt-jwks-url: %v", err)
		}
		cfg.JWKS = j
	}
	if c.AuthUpstream != "" {
		u, err := auth.NewUpstream(auth.UpstreamOptions{URL: c.AuthUpstream, Timeout: c.AuthUpstreamTimeout, Logger: c.Logger})
		if err != nil {
			return nil, nil, nil, configErrorf("--auth-upstream: %v", err)
		}
		cfg.Upstream = u
	}
	a, err := auth.New(cfg)
	if err != nil {
		if cfg.Upstream != nil {
			cfg.Upstream.Close()
		}
		return nil, nil, nil, configErrorf("%v", err)
	}
	return a, cfg.JWKS, cfg.Upstream, nil
}
