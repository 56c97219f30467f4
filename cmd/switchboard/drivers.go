package main

import "github.com/switchboard-gateway/switchboard/gateway/server"

// drivers lists the channel drivers this binary carries besides the sandbox.
func drivers() map[string]server.DriverFactory {
	return map[string]server.DriverFactory{}
}
