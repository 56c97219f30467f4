// Command switchboard is the one binary of the Switchboard gateway: the server and the tools
// around it. Commands are thin: they parse flags and call the packages that do the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/adapters/whatsapp"
	"github.com/switchboard-gateway/switchboard/config"
	"github.com/switchboard-gateway/switchboard/gateway"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(&globals{stdout: os.Stdout, stderr: os.Stderr}).ExecuteContext(ctx)
	stop()
	if err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "switchboard:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a code after the command printed what it had to say.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// globals are the flags every command shares.
type globals struct {
	configPath string
	dev        bool
	stdout     io.Writer
	stderr     io.Writer
	// channelHTTP is the HTTP client of the channel drivers (nil: their default). Tests set it
	// to one that trusts their TLS fakes of Microsoft's endpoints.
	channelHTTP *http.Client
	// whatsappTest adjusts the config of every WhatsApp adapter and link (nil in production):
	// tests put a fake whatsmeow client in place of the real one.
	whatsappTest func(*whatsapp.Config)
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "switchboard",
		Short:         "Messaging automation gateway for WhatsApp and Microsoft Teams",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.PersistentFlags().StringVarP(&g.configPath, "config", "c", os.Getenv("SWITCHBOARD_CONFIG"), "configuration file (or SWITCHBOARD_CONFIG)")
	root.PersistentFlags().BoolVar(&g.dev, "dev", false, "development mode: embedded defaults, a generated master key, the sandbox channel")
	config.AddFlags(root.PersistentFlags())

	root.AddCommand(
		newServeCmd(g),
		newSendCmd(g),
		newStatusCmd(g),
		newLogsCmd(g),
		newConfigCmd(g),
		newKeysCmd(g),
		newDeadLettersCmd(g),
		newSandboxCmd(g),
		newConsentCmd(g),
		newTeamsCmd(g),
		newWhatsAppCmd(g),
		newAutomationsCmd(g),
		newWebhooksCmd(g),
	)
	root.AddCommand(newPrivacyCmds(g)...)
	return root
}

// load returns the configuration the command runs with: the file, or the dev defaults, with
// SWITCHBOARD_* environment variables and flags applied.
func (g *globals) load(cmd *cobra.Command) (*config.Config, error) {
	if g.configPath == "" {
		if !g.dev {
			return nil, gateway.Errorf(gateway.EMissingField, "no configuration: pass --config FILE (or set SWITCHBOARD_CONFIG), or --dev for the embedded defaults")
		}
		return config.LoadDev(cmd.Flags())
	}
	return config.Load(g.configPath, cmd.Flags())
}
