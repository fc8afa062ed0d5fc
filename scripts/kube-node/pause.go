// The pod sandbox of the tests' Kubernetes node: PID 1 of every pod, it holds the pod's
// namespaces, reaps the zombies re-parented to it and exits on SIGTERM or SIGINT. Built static
// (CGO_ENABLED=0) by scripts/build-kube-control-plane, so its image holds this file alone.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
