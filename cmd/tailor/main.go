// Command tailor is the CLI of the tailor feature store: it applies feature
// definitions, loads files into the offline store, exports point-in-time
// training sets and manages a local ClickHouse.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/chserver"
	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

// defaultMemoryLimit is the CLI's soft Go heap limit unless GOMEMLIMIT
// sets one: the streaming paths keep under 100 MB live, and the limit stops
// garbage from piling up to twice that between collections.
const defaultMemoryLimit = 160 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tailor: "+err.Error())
		os.Exit(1)
	}
}

// app holds what every command shares: global flags and the output streams.
type app struct {
	out, errOut io.Writer
	clickhouse  string
	home        string
	database    string
	logLevel    string
	log         *slog.Logger
}

func newRoot(out, errOut io.Writer) *cobra.Command {
	a := &app{out: out, errOut: errOut}
	root := &cobra.Command{
		Use:           "tailor",
		Short:         "Feature store and model serving for hyper-personalization",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(a.logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %w", a.logLevel, err)
			}
			a.log = slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: lvl}))
			return nil
		},
	}
	root.SetOut(out)
	root.SetErr(errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&a.clickhouse, "clickhouse", os.Getenv("TAILOR_CLICKHOUSE"), "ClickHouse URL, e.g. clickhouse://127.0.0.1:9000 (env TAILOR_CLICKHOUSE; default: a local server managed under --home)")
	pf.StringVar(&a.home, "home", defaultHome(), "directory of tailor's local state (env TAILOR_HOME)")
	pf.StringVar(&a.database, "database", envOr("TAILOR_DATABASE", offline.DefaultDatabase), "ClickHouse database of tailor's tables (env TAILOR_DATABASE)")
	pf.StringVar(&a.logLevel, "log-level", "warn", "log level: debug, info, warn, error")

	root.AddCommand(
		a.applyCmd(), a.planCmd(), a.viewsCmd(), a.ingestCmd(), a.exportCmd(), a.clickhouseCmd(), a.serveCmd(), a.featuresCmd(), a.pushCmd(), a.materializeCmd(), a.modelsCmd(), a.predictCmd(), a.nbaCmd(), a.scoreCmd(), a.generateCmd(), a.trainCmd(),
	)
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func defaultHome() string {
	if h := os.Getenv("TAILOR_HOME"); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".tailor")
	}
	return ".tailor"
}

// openStore connects to the configured ClickHouse, starting the managed
// local server when no URL is given.
func (a *app) openStore(ctx context.Context) (*offline.Store, error) {
	dsn := a.clickhouse
	opt := offline.Options{Database: a.database, Logger: a.log}
	if dsn == "" {
		var started bool
		var err error
		managed := chserver.Managed{Home: a.home, Logger: a.log}
		// Dial wherever the local server runs now: a long-lived process
		// (tailor serve) finds it again after a restart.
		opt.Address = managed.Addr
		dsn, started, err = managed.Ensure(ctx)
		if err != nil {
			if errors.Is(err, chserver.ErrNotInstalled) {
				return nil, err
			}
			return nil, fmt.Errorf("local ClickHouse under %s: %w", a.home, err)
		}
		if started {
			fmt.Fprintf(a.errOut, "started local ClickHouse at %s (stop it with `tailor clickhouse stop`)\n", dsn)
		}
	}
	return offline.Open(ctx, dsn, opt)
}

// errNothingApplied is returned by commands that need applied definitions.
var errNothingApplied = errors.New("no definitions applied yet (run `tailor apply DIR`)")

// withApplied opens the store and runs f with the latest applied
// definitions.
func (a *app) withApplied(ctx context.Context, f func(*offline.Store, *offline.AppliedVersion) error) error {
	store, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	av, err := store.Applied(ctx)
	if err != nil {
		return err
	}
	if av == nil {
		return errNothingApplied
	}
	return f(store, av)
}

// withDefinitions loads the definitions in dir, opens the store and runs f.
func (a *app) withDefinitions(ctx context.Context, dir string, f func(*offline.Store, *definitions.Repo) error) error {
	repo, err := definitions.Load(dir)
	if err != nil {
		return definitionsError(dir, err)
	}
	store, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := f(store, repo); err != nil {
		return definitionsError(dir, err)
	}
	return nil
}
