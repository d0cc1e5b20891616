//go:build tools

// Package tools keeps the upstream programs' packages in this module's graph, so `go mod tidy` records every
// dependency they need and `go build k8s.io/kubernetes/cmd/...` resolves from go.sum alone.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)
