module github.com/agentflow/agentflow/sdk/go

go 1.23
