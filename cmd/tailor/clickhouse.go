package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/chserver"
)

func (a *app) clickhouseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "clickhouse",
		Short: "Manage the local ClickHouse server kept under --home",
		Long: "Without --clickhouse (or TAILOR_CLICKHOUSE) every tailor command uses a private\n" +
			"clickhouse-server kept under $TAILOR_HOME/clickhouse, started on first use.\n" +
			"These commands start, stop and inspect it explicitly.",
	}
	printStatus := func(st chserver.Status) {
		if !st.Running {
			fmt.Fprintf(a.out, "local ClickHouse: not running (data in %s)\n", st.Dir)
			return
		}
		fmt.Fprintf(a.out, "local ClickHouse: running\n  pid:     %d\n  url:     %s\n  http:    %s\n  version: %s\n  data:    %s\n", st.PID, st.DSN, st.HTTPAddr, st.Version, st.Dir)
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "start",
		Short: "Start the local ClickHouse (no-op when it runs)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := chserver.Managed{Home: a.home, Logger: a.log}.Start(cmd.Context())
			if err != nil {
				return err
			}
			printStatus(st)
			return nil
		},
	}, &cobra.Command{
		Use:   "stop",
		Short: "Stop the local ClickHouse (its data is kept)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := (chserver.Managed{Home: a.home, Logger: a.log}).Stop(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintln(a.out, "local ClickHouse: stopped")
			return nil
		},
	}, &cobra.Command{
		Use:   "status",
		Short: "Show whether the local ClickHouse runs, and where",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := chserver.Managed{Home: a.home, Logger: a.log}.Status(cmd.Context())
			if err != nil {
				return err
			}
			printStatus(st)
			return nil
		},
	})
	return cmd
}
