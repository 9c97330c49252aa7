//! Routing: the first route (in the order added) whose pattern and method match wins,
//! as in Velithon and Starlette. A `GET` route also answers `HEAD`. A path that some
//! route matches with another method gets 405 with an `Allow` header.

mod pattern;

use std::sync::Arc;

use http::Method;

pub use pattern::{ParamKind, Params, Pattern, PatternError};

pub struct Route<T> {
    /// Its position in the router (the order added).
    pub index: usize,
    pub pattern: Pattern,
    /// `None` answers every method.
    pub methods: Option<Vec<Method>>,
    pub action: Arc<T>,
}

impl<T> Route<T> {
    fn allows(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(list) => {
                list.contains(method) || (*method == Method::HEAD && list.contains(&Method::GET))
            }
        }
    }
}

pub struct Router<T> {
    routes: Vec<Route<T>>,
}

pub struct Match<'a, T> {
    pub route: &'a Route<T>,
    pub params: Params,
}

pub enum RouteMiss {
    NotFound,
    /// The path exists with other methods; the list is for the `Allow` header.
    MethodNotAllowed(Vec<Method>),
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> Router<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(
        &mut self,
        pattern: &str,
        methods: Option<Vec<Method>>,
        action: T,
    ) -> Result<(), PatternError> {
        let pattern = Pattern::parse(pattern)?;
        self.routes.push(Route {
            index: self.routes.len(),
            pattern,
            methods,
            action: Arc::new(action),
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route<T>] {
        &self.routes
    }

    pub fn find(&self, method: &Method, path: &str) -> Result<Match<'_, T>, RouteMiss> {
        let mut allowed: Option<Vec<Method>> = None;
        for route in &self.routes {
            let Some(params) = route.pattern.matches(path) else {
                continue;
            };
            if route.allows(method) {
                return Ok(Match { route, params });
            }
            let list = allowed.get_or_insert_with(Vec::new);
            for m in route.methods.iter().flatten() {
                if !list.contains(m) {
                    list.push(m.clone());
                }
            }
        }
        match allowed {
            Some(list) => Err(RouteMiss::MethodNotAllowed(list)),
            None => Err(RouteMiss::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_and_methods_filter() {
        let mut r = Router::new();
        r.add("/a/{x}", Some(vec![Method::POST]), 1).unwrap();
        r.add("/a/{x:int}", Some(vec![Method::GET]), 2).unwrap();
        r.add("/a/{p:path}", None, 3).unwrap();
        assert_eq!(*r.find(&Method::GET, "/a/1").ok().unwrap().route.action, 2);
        assert_eq!(*r.find(&Method::HEAD, "/a/1").ok().unwrap().route.action, 2);
        assert_eq!(*r.find(&Method::POST, "/a/1").ok().unwrap().route.action, 1);
        assert_eq!(*r.find(&Method::GET, "/a/b").ok().unwrap().route.action, 3);
        assert!(matches!(
            r.find(&Method::GET, "/b"),
            Err(RouteMiss::NotFound)
        ));
    }

    #[test]
    fn wrong_method_lists_allowed() {
        let mut r = Router::new();
        r.add("/x", Some(vec![Method::GET]), ()).unwrap();
        r.add("/x", Some(vec![Method::PUT, Method::GET]), ())
            .unwrap();
        match r.find(&Method::DELETE, "/x") {
            Err(RouteMiss::MethodNotAllowed(list)) => {
                assert_eq!(list, vec![Method::GET, Method::PUT])
            }
            _ => panic!("expected 405"),
        }
    }
}
