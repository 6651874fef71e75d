package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tailorhq/tailor/featurestore/definitions"
	"github.com/tailorhq/tailor/featurestore/offline"
)

func (a *app) planCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "plan DIR",
		Short: "Show what `tailor apply DIR` would change, changing nothing",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withDefinitions(cmd.Context(), args[0], func(store *offline.Store, repo *definitions.Repo) error {
				p, err := store.Plan(cmd.Context(), repo)
				if err != nil {
					return err
				}
				fmt.Fprint(a.out, p.String())
				return nil
			})
		},
	}
}

func (a *app) applyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "apply DIR",
		Short: "Validate the definitions in DIR (*.yaml) and apply them to the offline store",
		Long: "apply reads every *.yaml file under DIR, validates everything, and only then\n" +
			"creates or alters the ClickHouse tables and stores the definitions as a new version.\n" +
			"It is idempotent: applying unchanged definitions changes nothing.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withDefinitions(cmd.Context(), args[0], func(store *offline.Store, repo *definitions.Repo) error {
				p, version, err := store.Apply(cmd.Context(), repo, currentUser())
				if err != nil {
					return err
				}
				if len(p.Changes) == 0 {
					fmt.Fprintf(a.out, "No changes: definitions version %d is up to date.\n", version)
					return nil
				}
				fmt.Fprint(a.out, p.String())
				fmt.Fprintf(a.out, "Applied definitions version %d.\n", version)
				return nil
			})
		},
	}
}

// definitionsError lists every validation problem on its own line.
func definitionsError(dir string, err error) error {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) && len(joined.Unwrap()) > 1 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d problems in definitions %s:", len(joined.Unwrap()), dir)
		for _, e := range joined.Unwrap() {
			b.WriteString("\n  " + e.Error())
		}
		return errors.New(b.String())
	}
	return err
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}

func (a *app) viewsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "views", Short: "Show the applied feature views"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the applied feature views",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := a.withApplied(cmd.Context(), func(store *offline.Store, av *offline.AppliedVersion) error {
				return a.listViews(store, av)
			})
			if errors.Is(err, errNothingApplied) {
				fmt.Fprintln(a.out, "No definitions applied yet: run `tailor apply DIR`.")
				return nil
			}
			return err
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "describe NAME",
		Short: "Describe one applied feature view",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withApplied(cmd.Context(), func(store *offline.Store, av *offline.AppliedVersion) error {
				return a.describeView(store, av, args[0])
			})
		},
	})
	return cmd
}

func (a *app) listViews(store *offline.Store, av *offline.AppliedVersion) error {
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tENTITIES\tFEATURES\tTTL\tSOURCE")
	for _, v := range av.Repo.FeatureViews {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", v.Name, strings.Join(v.Entities, ","), len(v.Features), ttlText(v), sourceText(store, &v))
	}
	tw.Flush()
	fmt.Fprintf(a.out, "(definitions version %d, applied %s by %s)\n", av.Version, av.AppliedAt.Format("2006-01-02 15:04:05Z"), av.AppliedBy)
	return nil
}

func (a *app) describeView(store *offline.Store, av *offline.AppliedVersion, name string) error {
	v, ok := av.Repo.View(name)
	if !ok {
		var names []string
		for _, v := range av.Repo.FeatureViews {
			names = append(names, v.Name)
		}
		return fmt.Errorf("unknown feature view %q (applied views: %s)", name, strings.Join(names, ", "))
	}
	fmt.Fprintf(a.out, "name:        %s\n", v.Name)
	if v.Description != "" {
		fmt.Fprintf(a.out, "description: %s\n", v.Description)
	}
	var keys []string
	for _, e := range av.Repo.JoinKeys(v) {
		keys = append(keys, fmt.Sprintf("%s (entity %s, %s)", e.JoinKey, e.Name, e.Type))
	}
	fmt.Fprintf(a.out, "keys:        %s\n", strings.Join(keys, ", "))
	fmt.Fprintf(a.out, "ttl:         %s\n", ttlText(*v))
	fmt.Fprintf(a.out, "source:      %s\n", sourceText(store, v))
	fmt.Fprintf(a.out, "timestamp:   %s\n", v.Source.TimestampField)
	if v.Source.CreatedTimestampField != "" {
		fmt.Fprintf(a.out, "created:     %s\n", v.Source.CreatedTimestampField)
	}
	if len(v.Tags) > 0 {
		var tags []string
		for k, val := range v.Tags {
			tags = append(tags, k+"="+val)
		}
		sort.Strings(tags)
		fmt.Fprintf(a.out, "tags:        %s\n", strings.Join(tags, ", "))
	}
	fmt.Fprintf(a.out, "defined at:  %s\n", v.Pos)
	fmt.Fprintln(a.out, "features:")
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	for _, f := range v.Features {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Name, f.Type, f.Description)
	}
	return tw.Flush()
}

func ttlText(v definitions.FeatureView) string {
	if v.TTL == 0 {
		return "none"
	}
	return v.TTL.String()
}

func sourceText(store *offline.Store, v *definitions.FeatureView) string {
	if v.External() {
		return store.TableOf(v) + " (external)"
	}
	return store.TableOf(v)
}
