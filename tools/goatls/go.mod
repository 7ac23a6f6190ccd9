module goatls

go 1.19
