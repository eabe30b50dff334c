module github.com/pagewarp/pagewarp

go 1.26.8

require (
	github.com/loopholelabs/userfaultfd-go v0.1.2
	golang.org/x/sys v0.49.0
)
