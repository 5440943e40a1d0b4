// Command etcd is a thin wrapper around etcd's own main package
// (go.etcd.io/etcd/server/v3/etcdmain), so that a pinned etcd can be built
// with plain `go build` from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
