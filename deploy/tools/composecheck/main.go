// Command composecheck loads a Compose file with the Compose project loader itself (compose-go), so the
// checks the JSON schema cannot make are made too: every depends_on names a defined service, every
// variable is set or has a default, every profile's services resolve. It prints the resolved project as
// JSON on success and exits 1 with the loader's error otherwise.
//
// Usage: composecheck [-profile NAME]... FILE
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/template"
)

type profiles []string

func (p *profiles) String() string     { return strings.Join(*p, ",") }
func (p *profiles) Set(v string) error { *p = append(*p, v); return nil }

// strictReplacement is the loader's own substitution, except that a variable which is neither set nor
// given a default is an error instead of a warning and an empty string.
func strictReplacement(s string, m template.Mapping, cfg *template.Config) (string, error) {
	value, applied, err := template.DefaultReplacementAppliedFunc(s, m, cfg)
	if err == nil && !applied {
		return "", fmt.Errorf("%s is not set and has no default", s)
	}
	return value, err
}

func strictSubstitute(s string, m template.Mapping) (string, error) {
	return template.SubstituteWithOptions(s, m, template.WithReplacementFunction(strictReplacement),
		template.WithoutLogging)
}

// strict swaps the substitution of the loader's interpolation, when there is one (reading the files is a
// first pass without it).
func strict(o *loader.Options) {
	if o.Interpolate != nil {
		o.Interpolate.Substitute = strictSubstitute
	}
}

func main() {
	var active profiles
	flag.Var(&active, "profile", "a profile to activate (repeatable; '*' activates all)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-profile NAME]... FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(
		[]string{flag.Arg(0)},
		cli.WithName("cdcflow"),
		cli.WithDiscardEnvFile,
		cli.WithProfiles(active),
		cli.WithLoadOptions(strict),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	loaded, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := loaded.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
