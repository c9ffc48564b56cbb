package main

// A counter with one label, exposed in the Prometheus text exposition format (version 0.0.4),
// written by hand: the example keeps to the standard library, since Go modules cannot be
// downloaded on these machines.

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
)

type counter struct {
	name, help, label string

	mu     sync.Mutex
	values map[string]uint64
}

func newCounter(name, help, label string) *counter {
	return &counter{name: name, help: help, label: label, values: map[string]uint64{}}
}

func (c *counter) inc(labelValue string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.values[labelValue]++
}

// writeTo writes HELP, TYPE and one sample per label value, sorted so the output is stable.
func (c *counter) writeTo(w io.Writer) {
	c.mu.Lock()
	keys := make([]string, 0, len(c.values))
	for k := range c.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	samples := make([]uint64, len(keys))
	for i, k := range keys {
		samples[i] = c.values[k]
	}
	c.mu.Unlock()

	fmt.Fprintf(w, "# HELP %s %s\n", c.name, c.help)
	fmt.Fprintf(w, "# TYPE %s counter\n", c.name)
	for i, k := range keys {
		fmt.Fprintf(w, "%s{%s=\"%s\"} %d\n", c.name, c.label, escapeLabel(k), samples[i])
	}
}

// escapeLabel escapes a label value as the text format requires: backslash, quote, newline.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(v string) string { return labelEscaper.Replace(v) }
