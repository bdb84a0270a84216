raise ImportError("this extension needs a module that is not here")
