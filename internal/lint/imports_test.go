package lint

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "github.com/blkrep/blkrep/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

const mod = "github.com/blkrep/blkrep/"

func TestImportRules(t *testing.T) {
	pure := map[string]bool{mod + "bitmap": true, mod + "activelog": true, mod + "protocol": true, mod + "meta": true}
	impure := []string{"net", "os", "os/exec", "log", "log/slog", "time", "syscall", "golang.org/x/sys/unix"}
	for _, p := range listPackages(t) {
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "github.com/sirupsen/logrus") && p.ImportPath != mod+"cmd/blkrepd" {
				t.Errorf("%s imports %s: only cmd/blkrepd may (inject a *slog.Logger instead)", p.ImportPath, imp)
			}
			if strings.HasPrefix(p.ImportPath, mod+"nbd") && strings.HasPrefix(imp, mod+"internal/") {
				t.Errorf("%s imports %s: the NBD server must not know the daemon", p.ImportPath, imp)
			}
			if pure[p.ImportPath] {
				for _, bad := range impure {
					if imp == bad || strings.HasPrefix(imp, bad+"/") && bad != "os" && bad != "log" {
						t.Errorf("pure package %s imports %s", p.ImportPath, imp)
					}
				}
			}
		}
	}
}
