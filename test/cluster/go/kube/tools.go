//go:build tools

// Pins the control-plane programs built by ../../build.sh, so go.sum holds every module they need.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
