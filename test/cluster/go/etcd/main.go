// The etcd server, built from go.etcd.io/etcd/server/v3 by ../../build.sh (Debian's etcd is 3.4,
// older than kube-apiserver 1.34 is tested with).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
