// Package integration is the go-service's integration test: a regular parametrized Go test,
// compiled with `go test -c` into the image and run by the platform against the control instance
// of a new release, whose base URL is PAAS_TARGET_URL.
package integration

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// endpointCase is one GET: the status it must answer and strings its body must contain.
type endpointCase struct {
	name       string
	path       string
	wantStatus int
	wantBody   []string
}

func TestEndpoints(t *testing.T) {
	base := strings.TrimRight(os.Getenv("PAAS_TARGET_URL"), "/")
	if base == "" {
		t.Fatal("PAAS_TARGET_URL must name the instance under test, e.g. http://127.0.0.1:5000")
	}
	client := &http.Client{Timeout: 5 * time.Second}

	cases := []endpointCase{
		{"health", "/health", http.StatusOK, []string{"ok"}},
		{"home", "/", http.StatusOK, []string{"hello from v"}},
		// Count one failed fetch, so the counter has a sample to expose.
		{"failed fetch is counted", "/fetch?upstream=integration", http.StatusBadGateway, nil},
		{"metrics", "/metrics", http.StatusOK, []string{
			"# TYPE fetch_errors_total counter",
			`fetch_errors_total{upstream="integration"} `,
		}},
		{"slow answer", "/slow?ms=50", http.StatusOK, []string{"slow answer after 50 ms"}},
		{"slow refuses a bad wait", "/slow?ms=-1", http.StatusBadRequest, nil},
		{"unknown path", "/no-such-page", http.StatusNotFound, nil},
	}
	if release := os.Getenv("PAAS_RELEASE"); release != "" {
		cases = append(cases, endpointCase{"serves this release", "/", http.StatusOK, []string{"hello from v" + release + " "}})
	}

	for _, tc := range cases {
		tc := tc
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.Get(base + tc.path)
			if err != nil {
				t.Fatalf("GET %s: %v", tc.path, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("GET %s: reading the body: %v", tc.path, err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("GET %s answered %d, want %d; body: %s", tc.path, resp.StatusCode, tc.wantStatus, body)
			}
			for _, want := range tc.wantBody {
				if !strings.Contains(string(body), want) {
					t.Errorf("GET %s: body lacks %q; body:\n%s", tc.path, want, body)
				}
			}
		})
	}
}
