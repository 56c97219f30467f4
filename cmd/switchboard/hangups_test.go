package main

import (
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPRequestsAReload: a real SIGHUP to the process becomes a reload request (serve hands
// the channel to the automations' reloader), and nothing else does.
func TestSIGHUPRequestsAReload(t *testing.T) {
	reloads := hangups(t.Context())
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reloads:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP did not ask for a reload")
	}
	select {
	case <-reloads:
		t.Fatal("a reload without a SIGHUP")
	default:
	}
}
