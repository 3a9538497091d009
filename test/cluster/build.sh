#!/usr/bin/env bash
# Builds the real control plane from Go modules: kube-apiserver and kube-controller-manager
# (k8s.io/kubernetes, pinned in go/kube/go.mod), the stand-in kubelet (go/kube/kubelet) and etcd
# (go/etcd). Binaries go to a cache folder keyed by the versions and a hash of the Go sources, so
# a second run on the same machine is a no-op. Prints the folder on stdout, progress on stderr.
#
#   KFP_CLUSTER_CACHE  cache root (default ~/.cache/kube-front-proxy)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION=v1.34.3
ETCD_VERSION=v3.6.16

fail() { echo "test/cluster/build.sh: $*" >&2; exit 1; }
export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null 2>&1 || fail "no Go toolchain (expected /usr/local/go/bin/go): the real cluster is built from Go modules"

sources_hash="$(cd "$here/go" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
root="${KFP_CLUSTER_CACHE:-$HOME/.cache/kube-front-proxy}"
out="$root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-$sources_hash"
bins=(kube-apiserver kube-controller-manager fake-kubelet etcd)

complete=1
for b in "${bins[@]}"; do [ -x "$out/$b" ] || complete=0; done
announce() { echo "$("$out/kube-apiserver" --version | sed 's/^Kubernetes/kube-apiserver/'), $("$out/etcd" --version | sed -n 1p | tr -d :), in $out" >&2; }
if [ "$complete" = 1 ]; then announce; echo "$out"; exit 0; fi

rm -rf "$out.tmp" && mkdir -p "$out.tmp"
start=$(date +%s)
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
stamp="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
# -mod=readonly: go.mod/go.sum pin every module; a build never edits them.
export GOFLAGS=-mod=readonly CGO_ENABLED=0
echo "building kube-apiserver, kube-controller-manager $K8S_VERSION, fake-kubelet, etcd $ETCD_VERSION into $out (cold: minutes)" >&2
(cd "$here/go/etcd" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" .) || fail "etcd $ETCD_VERSION did not build"
(cd "$here/go/kube" && go build -trimpath -ldflags "$stamp" -o "$out.tmp/" \
   k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager ./fake-kubelet) \
  || fail "kube-apiserver $K8S_VERSION did not build"
rm -rf "$out" && mv "$out.tmp" "$out"
# Older builds (other sources or versions) are 300 MB each: keep only this one.
find "$root" -mindepth 1 -maxdepth 1 -name 'k8s-*' ! -name "$(basename "$out")" -exec rm -rf {} +
echo "built in $(( $(date +%s) - start )) s" >&2
announce
echo "$out"
