//go:build tools

// Package tools keeps actionlint's command in this module's graph, so `go mod tidy` records every dependency and
// `go build github.com/rhysd/actionlint/cmd/actionlint` resolves from go.sum alone (hack/ensure-tools.sh actionlint).
package tools

import _ "github.com/rhysd/actionlint"
