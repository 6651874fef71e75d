package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/retailgen"
	"github.com/tailorhq/tailor/featurestore/tablefile"
)

func (a *app) generateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Generate synthetic data",
	}
	var opt retailgen.Options
	var end string
	retail := &cobra.Command{
		Use:   "retail [--customers N] [--products N] [--days N] [--seed S]",
		Short: "Generate a retail world with known answers into ClickHouse",
		Long: "retail writes a deterministic synthetic retail world into tailor's database: the catalogue\n" +
			"(retail_products), customers with their planted truth (retail_customers: category affinities,\n" +
			"preferred channel and hour, purchase cadence, consents) and their events over --days before\n" +
			"--end: orders (retail_orders), product views (retail_views), campaign sends (retail_sends) and\n" +
			"opens (retail_opens). The same options give the same rows.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if end != "" {
				t, err := tablefile.ParseTimestamp(end)
				if err != nil {
					return fmt.Errorf("--end: %w", err)
				}
				opt.End = t
			}
			if opt.Customers < 1 || opt.Customers > 10_000_000 {
				return fmt.Errorf("--customers %d: between 1 and 10,000,000", opt.Customers)
			}
			store, err := a.openStore(ctx)
			if err != nil {
				return err
			}
			defer store.Close()
			p := newProgress(a.errOut)
			opt.Progress = func(customers, rows int64) { p.update(fmt.Sprintf("generate retail (%d customers)", customers), rows) }
			st, err := retailgen.Generate(ctx, store.Conn(), store.Database(), opt)
			p.done()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "retail world (seed %d) from %s to %s: %d customers, %d products, %d orders, %d views, %d sends, %d opens in %s (%.0f rows/s)\n",
				opt.Seed, st.Start.Format(time.DateOnly), st.End.Format(time.DateOnly), st.Customers, st.Products, st.Orders, st.Views, st.Sends, st.Opens,
				st.Duration.Round(time.Millisecond), float64(st.Rows())/max(st.Duration.Seconds(), 1e-9))
			return nil
		},
	}
	f := retail.Flags()
	f.IntVar(&opt.Customers, "customers", 10_000, "customers (1k..10M)")
	f.IntVar(&opt.Products, "products", 200, "products in the catalogue")
	f.IntVar(&opt.Days, "days", 180, "days of events")
	f.Uint64Var(&opt.Seed, "seed", 1, "random seed")
	f.StringVar(&end, "end", "", "end of the period, exclusive (default: today 00:00 UTC)")
	f.IntVar(&opt.Workers, "workers", 0, "parallel workers (default: the number of CPUs)")
	f.BoolVar(&opt.Replace, "replace", false, "replace an existing world's tables")
	cmd.AddCommand(retail)
	return cmd
}
