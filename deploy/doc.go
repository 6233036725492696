// Package deploy holds the deployment files (kubernetes/, prometheus/,
// redis/) and the tests that check them: the Kubernetes manifests against
// the real Kubernetes and prometheus-operator API types with unknown fields
// rejected, the alert rules with Prometheus's own rule and PromQL parsers
// against the metrics internal/metrics really exports, and .dockerignore
// with BuildKit's pattern matcher.
//
// It is a module of its own so that those test-only dependencies stay out
// of the tokenkeeper module; it imports the repository's packages through
// a replace directive, so the files are always checked against this
// checkout. No Go code here is part of any binary.
package deploy
