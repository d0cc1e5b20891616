module konnector.test/render

go 1.19
