package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/switchboard-gateway/switchboard/config"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Validate a configuration file and print every problem as file:line: field: problem",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			problems := config.Check(args[0])
			for _, p := range problems {
				fmt.Fprintln(g.stdout, p.String())
			}
			if len(problems) > 0 {
				fmt.Fprintf(g.stderr, "%d problem(s) in %s\n", len(problems), args[0])
				return exitError{code: 1}
			}
			fmt.Fprintf(g.stdout, "%s: ok\n", args[0])
			return nil
		},
	})
	return cmd
}
