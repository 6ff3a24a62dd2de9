// Renders an Ollama TEMPLATE with Go's own text/template, the engine Ollama uses, on
// {"Template": ..., "Messages": [{"Role", "Content", "Thinking"}]} read from stdin.
package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role     string
	Content  string
	Thinking string
}

func main() {
	var in struct {
		Template string
		Messages []Message
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	t := template.Must(template.New("").Option("missingkey=zero").Parse(in.Template))
	if err := t.Execute(os.Stdout, map[string]any{"Messages": in.Messages, "System": ""}); err != nil {
		panic(err)
	}
}
