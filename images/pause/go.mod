module tfmaas.dev/images/pause

go 1.22
