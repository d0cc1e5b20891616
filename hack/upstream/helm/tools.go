//go:build tools

// Package tools keeps helm's command packages in this module's graph, so `go mod tidy` records every dependency
// and `go build helm.sh/helm/v4/cmd/helm` resolves from go.sum alone.
package tools

import _ "helm.sh/helm/v4/pkg/cmd"
