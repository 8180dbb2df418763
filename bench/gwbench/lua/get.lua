-- GET of the URL's path, the same request every time (wrk's static mode): trivial, /healthz.
function init(args)
end
