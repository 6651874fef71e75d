package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	registryv1 "github.com/tailorhq/tailor/proto/gen/tailor/registry/v1"
	"github.com/tailorhq/tailor/proto/gen/tailor/registry/v1/registryv1connect"
)

// uploadChunk is how many bytes of a model one upload message carries.
const uploadChunk = 1 << 20

// registerModel streams a model and its metadata to a server's registry
// and prints the version it became.
func (a *app) registerModel(ctx context.Context, client registryv1connect.RegistryServiceClient, server, actor, modelName, specFile string, spec []byte, model io.Reader) error {
	stream := client.RegisterModel(ctx)
	if err := stream.Send(&registryv1.RegisterModelRequest{Part: &registryv1.RegisterModelRequest_Metadata{
		Metadata: &registryv1.ModelUpload{SpecYaml: string(spec), SpecFile: specFile, Actor: actor},
	}}); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %w", server, err)
	}
	buf := make([]byte, uploadChunk)
	for {
		n, err := model.Read(buf)
		if n > 0 {
			if serr := stream.Send(&registryv1.RegisterModelRequest{Part: &registryv1.RegisterModelRequest_Chunk{Chunk: buf[:n]}}); serr != nil {
				break // the server answered early; CloseAndReceive has its error
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", modelName, err)
		}
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return fmt.Errorf("register %s: %w", modelName, err)
	}
	v := resp.Msg.GetVersion()
	if resp.Msg.GetExisting() {
		fmt.Fprintf(a.out, "%s is already registered as %s version %d (sha256 %s)\n", modelName, v.GetName(), v.GetVersion(), v.GetSha256())
		return nil
	}
	fmt.Fprintf(a.out, "registered %s version %d (%s, %d bytes, sha256 %s)\n", v.GetName(), v.GetVersion(), v.GetTask(), v.GetSizeBytes(), v.GetSha256())
	return nil
}

func (a *app) modelsCmd() *cobra.Command {
	var server, actor string
	cmd := &cobra.Command{
		Use:   "models",
		Short: "Register, list, describe, alias and archive models in a server's registry; check a model's inputs before registering it",
	}
	cmd.PersistentFlags().StringVar(&server, "server", "http://127.0.0.1:8080", "base URL of a tailor server")
	cmd.PersistentFlags().StringVar(&actor, "actor", defaultActor(), "who makes the change, for the audit trail")
	client := func() registryv1connect.RegistryServiceClient {
		return registryv1connect.NewRegistryServiceClient(http.DefaultClient, server)
	}

	var spec string
	register := &cobra.Command{
		Use:   "register MODEL.onnx [--spec model.yaml]",
		Short: "Upload an ONNX model with its metadata; it is validated before a version exists",
		Long: "register streams MODEL.onnx and its metadata (--spec, default model.yaml beside the model)\n" +
			"to the server, which loads the model with ONNX Runtime, checks its inputs and outputs\n" +
			"against the metadata and the metadata's feature references against the applied\n" +
			"definitions, and stores a new immutable version. The same bytes and metadata twice\n" +
			"are one version.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if spec == "" {
				spec = filepath.Join(filepath.Dir(args[0]), "model.yaml")
			}
			meta, err := os.ReadFile(spec)
			if err != nil {
				return fmt.Errorf("metadata: %w", err)
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			return a.registerModel(cmd.Context(), client(), server, actor, args[0], spec, meta, f)
		},
	}
	register.Flags().StringVar(&spec, "spec", "", "the model's metadata (default: model.yaml beside the model)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the registered models with their latest version and aliases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := client().ListModels(cmd.Context(), connect.NewRequest(&registryv1.ListModelsRequest{}))
			if err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "MODEL\tLATEST\tTASK\tALIASES (of the latest)\tREGISTERED")
			for _, m := range resp.Msg.GetModels() {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", m.GetName(), m.GetVersion(), m.GetTask(), strings.Join(m.GetAliases(), ","), m.GetCreatedAt().AsTime().Format(time.RFC3339))
			}
			return w.Flush()
		},
	}

	describe := &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a model's versions, aliases, inputs, outputs, metrics, lineage and audit trail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := client().GetModel(cmd.Context(), connect.NewRequest(&registryv1.GetModelRequest{Name: args[0]}))
			if err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			a.describeModel(resp.Msg)
			return nil
		},
	}

	var reason string
	alias := &cobra.Command{
		Use:   "alias NAME ALIAS VERSION [--reason TEXT]",
		Short: "Point an alias (champion, challenger, ...) at a version; servers follow within seconds",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			version, err := strconv.ParseInt(args[2], 10, 64)
			if err != nil {
				return fmt.Errorf("version %q is not a number", args[2])
			}
			resp, err := client().SetAlias(cmd.Context(), connect.NewRequest(&registryv1.SetAliasRequest{
				Name: args[0], Alias: args[1], Version: version, Actor: actor, Reason: reason,
			}))
			if err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			if p := resp.Msg.GetPreviousVersion(); p > 0 {
				fmt.Fprintf(a.out, "%s@%s: version %d -> %d\n", args[0], args[1], p, version)
			} else {
				fmt.Fprintf(a.out, "%s@%s: version %d\n", args[0], args[1], version)
			}
			return nil
		},
	}
	alias.Flags().StringVar(&reason, "reason", "", "why, for the audit trail")

	var restore bool
	archive := &cobra.Command{
		Use:   "archive NAME VERSION [--restore] [--reason TEXT]",
		Short: "Archive a version (it can no longer take an alias), or restore it",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			version, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil {
				return fmt.Errorf("version %q is not a number", args[1])
			}
			if _, err := client().ArchiveVersion(cmd.Context(), connect.NewRequest(&registryv1.ArchiveVersionRequest{
				Name: args[0], Version: version, Archived: !restore, Actor: actor, Reason: reason,
			})); err != nil {
				return fmt.Errorf("%s: %w", server, err)
			}
			what := "archived"
			if restore {
				what = "restored"
			}
			fmt.Fprintf(a.out, "%s version %d %s\n", args[0], version, what)
			return nil
		},
	}
	archive.Flags().BoolVar(&restore, "restore", false, "restore an archived version")
	archive.Flags().StringVar(&reason, "reason", "", "why, for the audit trail")

	cmd.AddCommand(register, list, describe, alias, archive, a.checkCmd(&server))
	return cmd
}

func (a *app) describeModel(m *registryv1.GetModelResponse) {
	out := a.out
	vs := m.GetVersions()
	if len(vs) == 0 {
		return
	}
	fmt.Fprintf(out, "model %s (%s)\n", vs[0].GetName(), vs[len(vs)-1].GetTask())
	var aliases []string
	for a, v := range m.GetAliases() {
		aliases = append(aliases, fmt.Sprintf("%s -> %d", a, v))
	}
	sort.Strings(aliases)
	fmt.Fprintf(out, "aliases: %s\n", strings.Join(aliases, ", "))
	for _, v := range vs {
		state := ""
		if v.GetArchived() {
			state = " [archived]"
		}
		if len(v.GetAliases()) > 0 {
			state += " @" + strings.Join(v.GetAliases(), " @")
		}
		fmt.Fprintf(out, "\nversion %d%s\n", v.GetVersion(), state)
		fmt.Fprintf(out, "  registered %s by %s; %d bytes, sha256 %s\n", v.GetCreatedAt().AsTime().Format(time.RFC3339), v.GetCreatedBy(), v.GetSizeBytes(), v.GetSha256())
		if d := v.GetDescription(); d != "" {
			fmt.Fprintf(out, "  %s\n", d)
		}
		for _, in := range v.GetInputs() {
			fmt.Fprintf(out, "  input %s %s %v: %s\n", in.GetName(), in.GetElementType(), in.GetShape(), strings.Join(in.GetSources(), ", "))
		}
		for _, o := range v.GetOutputs() {
			fmt.Fprintf(out, "  output %s: labels %s\n", o.GetName(), strings.Join(o.GetLabels(), ", "))
		}
		fmt.Fprintf(out, "  metrics %s  tags %s  lineage %s\n", sortedMap(v.GetMetrics()), sortedMap(v.GetTags()), sortedMap(v.GetLineage()))
	}
	fmt.Fprintln(out, "\naudit trail:")
	for _, e := range m.GetAudit() {
		line := fmt.Sprintf("  %s  %-8s %s version %d", e.GetAt().AsTime().Format(time.RFC3339), e.GetAction(), e.GetActor(), e.GetVersion())
		if e.GetAction() == "alias" {
			line += fmt.Sprintf(" as %s (was %d)", e.GetAlias(), e.GetPreviousVersion())
		}
		if r := e.GetReason(); r != "" {
			line += ": " + r
		}
		fmt.Fprintln(out, line)
	}
}

func sortedMap[V any](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// defaultActor is user@host, for audit trails.
func defaultActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
