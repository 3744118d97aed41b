//! Procedural macros for furrow. Use them through the `furrow` crate:
//! `#[furrow::main]`, `#[furrow::remote]`; and `#[furrow_testing::test]`
//! through `furrow-testing`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{FnArg, ItemFn, LitStr, Pat, ReturnType, Token, Type};

fn err(span: Span, msg: &str) -> TokenStream {
    syn::Error::new(span, msg).to_compile_error().into()
}

/// Boot furrow in `main`.
///
/// Expands `async fn main() -> R { … }` into a synchronous `main` that
/// first checks whether this process was started as a child actor (then it
/// serves as one and exits, and your body never runs), and otherwise runs
/// the body as the root of an actor tree on a tokio runtime of one thread
/// (`furrow::Config::threads` gives it more).
/// When the body returns, every actor it started has been ended and
/// reaped.
///
/// ```ignore
/// #[furrow::main]
/// async fn main() -> furrow::Result<()> {
///     furrow::open_nursery(async |n| { n.start_actor("worker").await?; Ok(()) }).await
/// }
/// ```
///
/// `#[furrow::main(config = make_config)]` configures the root with
/// `make_config()`, a `fn() -> furrow::Config`, Ctrl-C handling included
/// (the root's runtime is built with it). Without it the root has the default
/// configuration, named after the executable.
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    // `config = path`: a `fn() -> furrow::Config` for the root.
    let config = if attr.is_empty() {
        None
    } else {
        let parsed = syn::parse::<syn::Meta>(attr).and_then(|m| match m {
            syn::Meta::NameValue(nv) if nv.path.is_ident("config") => Ok(nv.value),
            other => Err(syn::Error::new_spanned(other, "expected `config = path::to::fn` (a fn() -> furrow::Config)")),
        });
        match parsed {
            Ok(v) => Some(v),
            Err(e) => return e.to_compile_error().into(),
        }
    };
    let f = syn::parse_macro_input!(item as ItemFn);
    if f.sig.asyncness.is_none() {
        return err(f.sig.fn_token.span, "#[furrow::main] goes on an `async fn main`");
    }
    if !f.sig.inputs.is_empty() {
        return err(f.sig.ident.span(), "`main` takes no arguments");
    }
    let attrs = &f.attrs;
    let vis = &f.vis;
    let ident = &f.sig.ident;
    let output = &f.sig.output;
    let body = &f.block;
    let run = match config {
        Some(config) => quote! { ::furrow::__private::block_on_root_with((#config)(), __furrow_main()) },
        None => quote! { ::furrow::block_on_root(__furrow_main()) },
    };
    quote! {
        #(#attrs)*
        #vis fn #ident() #output {
            ::furrow::enter_child_if_spawned();
            async fn __furrow_main() #output #body
            #run
        }
    }
    .into()
}

/// The `T` of a return type spelled `…Result<T, …>`, if it is one.
fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

struct Param {
    ident: syn::Ident,
    wire: String,
    ty: Type,
}

/// Why a parameter's type cannot be a remote function's: arguments are
/// decoded from the wire into values the function owns, so a borrow
/// (`&str`, `Cow<'a, str>`), an `impl Trait` or a `dyn Trait` has nothing
/// to borrow from or no type to decode into. Without this, rustc's own
/// errors ("missing lifetime specifier", a lifetime error pointing into
/// the macro's expansion) say nothing of why.
fn not_owned(ty: &Type) -> Option<syn::Error> {
    // A type as a person writes it (`quote` spaces every token).
    let shown = |t: &Type| {
        quote!(#t)
            .to_string()
            .replace(" :: ", "::")
            .replace(":: ", "::")
            .replace(" <", "<")
            .replace("< ", "<")
            .replace(" >", ">")
            .replace(" ,", ",")
    };
    let last_is =
        |t: &Type, name: &str| matches!(t, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == name));
    let owned_of = |r: &syn::TypeReference| -> String {
        match &*r.elem {
            t if last_is(t, "str") => "`String`".to_owned(),
            t if last_is(t, "Path") => "`PathBuf`".to_owned(),
            t if last_is(t, "OsStr") => "`OsString`".to_owned(),
            Type::Slice(sl) if last_is(&sl.elem, "u8") => {
                "`furrow::Bytes` (or `Vec<u8>` with `serde_bytes`)".to_owned()
            }
            Type::Slice(sl) => format!("`Vec<{}>`", shown(&sl.elem)),
            elem => format!("`{}`", shown(elem)),
        }
    };
    match ty {
        Type::Reference(r) => Some(syn::Error::new_spanned(
            r,
            format!(
                "arguments of a remote function are decoded from the wire and owned by the function: \
                 take {} instead of a reference",
                owned_of(r)
            ),
        )),
        Type::ImplTrait(t) => Some(syn::Error::new_spanned(
            t,
            "arguments of a remote function are decoded from the wire: `impl Trait` names no type to decode; \
             use a concrete type",
        )),
        Type::TraitObject(t) => Some(syn::Error::new_spanned(
            t,
            "arguments of a remote function are decoded from the wire: a `dyn Trait` cannot be; use a concrete type",
        )),
        Type::Paren(t) => not_owned(&t.elem),
        Type::Group(t) => not_owned(&t.elem),
        Type::Array(t) => not_owned(&t.elem),
        Type::Slice(t) => not_owned(&t.elem),
        Type::Tuple(t) => t.elems.iter().find_map(not_owned),
        Type::Path(p) => {
            let q = p.qself.as_ref().and_then(|q| not_owned(&q.ty));
            q.or_else(|| {
                p.path.segments.iter().find_map(|seg| match &seg.arguments {
                    syn::PathArguments::AngleBracketed(a) => a.args.iter().find_map(|arg| match arg {
                        // `'static` borrows nothing (`Cow<'static, str>`
                        // decodes as an owned value).
                        syn::GenericArgument::Lifetime(l) if l.ident != "static" => Some(syn::Error::new_spanned(
                            l,
                            format!(
                                "arguments of a remote function are decoded from the wire and owned by the \
                                 function: `{}` borrows for `{l}`; use its owned form (`String`, `Vec<..>`, \
                                 or `'static` in place of `{l}`)",
                                shown(ty)
                            ),
                        )),
                        syn::GenericArgument::Type(t) => not_owned(t),
                        _ => None,
                    }),
                    _ => None,
                })
            })
        }
        _ => None,
    }
}

fn params_of(f: &ItemFn, skip: usize) -> Result<Vec<Param>, syn::Error> {
    let mut out = Vec::new();
    for input in f.sig.inputs.iter().skip(skip) {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(r, "remote functions are free functions: no `self`"));
            }
            FnArg::Typed(pt) => {
                let Pat::Ident(pi) = &*pt.pat else {
                    return Err(syn::Error::new_spanned(
                        &pt.pat,
                        "parameters of a remote function must be plain names (they are the keys of its kwargs)",
                    ));
                };
                if pi.by_ref.is_some() || pi.subpat.is_some() {
                    return Err(syn::Error::new_spanned(pi, "parameters must be plain names"));
                }
                if let Some(e) = not_owned(&pt.ty) {
                    return Err(e);
                }
                out.push(Param { ident: pi.ident.clone(), wire: pi.ident.unraw().to_string(), ty: (*pt.ty).clone() });
            }
        }
    }
    Ok(out)
}

/// Parse `name = "..."` from the attribute.
fn name_arg(attr: TokenStream) -> Result<Option<LitStr>, syn::Error> {
    if attr.is_empty() {
        return Ok(None);
    }
    let metas = Punctuated::<syn::MetaNameValue, Token![,]>::parse_terminated.parse(attr)?;
    let mut name = None;
    for m in metas {
        if m.path.is_ident("name") {
            match m.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => name = Some(s),
                other => {
                    return Err(syn::Error::new_spanned(other, "expected a string: name = \"module::function\""));
                }
            }
        } else {
            return Err(syn::Error::new_spanned(m.path, "unknown argument; expected `name = \"...\"`"));
        }
    }
    Ok(name)
}

/// Make an `async fn` callable from other actors.
///
/// The function is registered under its module path plus its name (or
/// `#[furrow::remote(name = "...")]`), and its name becomes a typed handle
/// (`furrow::RemoteFn`) for `Portal::run`, which still dereferences to the
/// function for local calls. Parameters must be plain names with
/// `Deserialize + Serialize + Send + 'static` types; the return value must
/// be `Serialize` (for a `Result<T, E>`, `T` is returned and `E` becomes a
/// remote error).
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let name = match name_arg(attr) {
        Ok(n) => n,
        Err(e) => return e.to_compile_error().into(),
    };
    let f = syn::parse_macro_input!(item as ItemFn);
    match expand_remote(f, name, Kind::Rpc) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Make an `async fn` a context endpoint that peers open with
/// `Portal::open_context`.
///
/// The first parameter is the callee's `furrow::Context`; the others are
/// the arguments, as for `#[furrow::remote]`. The function must call
/// `ctx.started(&first)` before the opener's body runs, and may then open
/// the context's stream. Its return value is the context's outcome.
///
/// ```ignore
/// #[furrow::context]
/// async fn counter(ctx: furrow::Context, upto: u64) -> furrow::Result<u64> {
///     ctx.started(&"ready").await?;
///     ctx.open_stream(async |s| { for i in 0..upto { s.send(&i).await?; } Ok(upto) }).await
/// }
/// ```
#[proc_macro_attribute]
pub fn context(attr: TokenStream, item: TokenStream) -> TokenStream {
    let name = match name_arg(attr) {
        Ok(n) => n,
        Err(e) => return e.to_compile_error().into(),
    };
    let f = syn::parse_macro_input!(item as ItemFn);
    match expand_remote(f, name, Kind::Context) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rpc,
    Context,
}

fn expand_remote(f: ItemFn, name: Option<LitStr>, kind: Kind) -> Result<TokenStream2, syn::Error> {
    let sig = &f.sig;
    let attr_name = if kind == Kind::Rpc { "#[furrow::remote]" } else { "#[furrow::context]" };
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(sig.fn_token, format!("{attr_name} goes on an `async fn`")));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let only_lifetimes = sig.generics.params.iter().all(|p| matches!(p, syn::GenericParam::Lifetime(_)));
        return Err(syn::Error::new_spanned(
            &sig.generics,
            if only_lifetimes && sig.generics.where_clause.is_none() {
                "a remote function takes no lifetime parameters: its arguments are decoded from the wire and \
                 owned by it (`String`, not `&'a str`)"
            } else {
                "remote functions cannot be generic: each is registered by name with one concrete signature"
            },
        ));
    }
    if kind == Kind::Context && sig.inputs.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "a #[furrow::context] function takes the callee's `furrow::Context` as its first parameter",
        ));
    }
    let skip = if kind == Kind::Context { 1 } else { 0 };
    let params = params_of(&f, skip)?;
    let ident = &sig.ident;
    let vis = &f.vis;
    let impl_ident = format_ident!("__furrow_impl_{}", ident);
    let ret_ty: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let ok_ty = result_ok_type(&ret_ty).cloned();
    let out_ty = ok_ty.clone().unwrap_or_else(|| ret_ty.clone());
    let name_expr = match &name {
        Some(n) => quote!(#n),
        None => quote!(::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident))),
    };
    let (docs, other_attrs): (Vec<_>, Vec<_>) = f.attrs.iter().partition(|a| a.path().is_ident("doc"));
    let pidents: Vec<_> = params.iter().map(|p| &p.ident).collect();
    let pwire: Vec<_> = params.iter().map(|p| &p.wire).collect();
    let ptys: Vec<_> = params.iter().map(|p| &p.ty).collect();
    let body = &f.block;
    let inputs = &sig.inputs;
    let output = &sig.output;
    let encode = if ok_ty.is_some() {
        quote! {
            match __out {
                ::core::result::Result::Ok(v) => ::furrow::__private::encode_output(&v, __NAME),
                ::core::result::Result::Err(e) => {
                    #[allow(unused_imports)]
                    use ::furrow::__private::{
                        ViaDisplay as _, ViaError as _, ViaFurrow as _, ViaReport as _, ViaSerdeError as _,
                    };
                    ::core::result::Result::Err((&&&&&::furrow::__private::Wrap(&e)).__furrow_failure())
                }
            }
        }
    } else {
        quote!(::furrow::__private::encode_output(&__out, __NAME))
    };
    let serde_crate = "::furrow::__private::serde".to_string();
    let handle = if kind == Kind::Rpc {
        quote! {
            #(#docs)*
            #[allow(non_upper_case_globals)]
            #vis const #ident: ::furrow::RemoteFn<
                (#(#ptys,)*),
                #out_ty,
                fn(#(#ptys),*) -> ::furrow::__private::BoxFuture<'static, #ret_ty>,
            > = {
                #[allow(clippy::too_many_arguments)]
                fn __local(#(#pidents: #ptys),*) -> ::furrow::__private::BoxFuture<'static, #ret_ty> {
                    ::std::boxed::Box::pin(#impl_ident(#(#pidents),*))
                }
                ::furrow::RemoteFn::__new(#name_expr, &[#(#pwire),*], __local)
            };
        }
    } else {
        quote! {
            #(#docs)*
            #[allow(non_upper_case_globals)]
            #vis const #ident: ::furrow::ContextFn<(#(#ptys,)*), #out_ty> =
                ::furrow::ContextFn::__new(#name_expr, &[#(#pwire),*]);
        }
    };
    let (kind_tok, handler_sig, ctx_arg) = if kind == Kind::Rpc {
        (quote!(Asyncfunc), quote!(kwargs: ::furrow::__private::Payload), quote!())
    } else {
        (quote!(Context), quote!(__ctx: ::furrow::Context, kwargs: ::furrow::__private::Payload), quote!(__ctx,))
    };
    let handler_variant = if kind == Kind::Rpc { quote!(Rpc) } else { quote!(Context) };
    Ok(quote! {
        #(#other_attrs)*
        #[doc(hidden)]
        #[allow(non_snake_case, clippy::too_many_arguments)]
        async fn #impl_ident(#inputs) #output #body

        #handle

        const _: () = {
            const __NAME: &str = #name_expr;

            #[::furrow::__private::linkme::distributed_slice(::furrow::__private::REMOTES)]
            #[linkme(crate = ::furrow::__private::linkme)]
            static __FURROW_REGISTRATION: ::furrow::__private::Registration = ::furrow::__private::Registration {
                name: __NAME,
                params: &[#(#pwire),*],
                kind: ::furrow::__private::FuncType::#kind_tok,
                handler: ::furrow::__private::Handler::#handler_variant(__handler),
                file: ::core::file!(),
                line: ::core::line!(),
            };

            fn __handler(
                #handler_sig
            ) -> ::furrow::__private::BoxFuture<
                'static,
                ::core::result::Result<::furrow::__private::PayloadParts, ::furrow::__private::Failure>,
            > {
                ::std::boxed::Box::pin(async move {
                    #[derive(::furrow::__private::serde::Deserialize)]
                    #[serde(crate = #serde_crate, deny_unknown_fields)]
                    #[allow(non_camel_case_types)]
                    struct __Args { #( #[serde(rename = #pwire)] #pidents: #ptys, )* }
                    let __a: __Args = ::furrow::__private::decode_kwargs(&kwargs, __NAME)?;
                    let __out = #impl_ident(#ctx_arg #(__a.#pidents),*).await;
                    #encode
                })
            }
        };
    })
}

/// Register a function as an integration test run by the `furrow-testing`
/// harness, each test in its own process with leak checks. The function may
/// return `()` or any `Result<(), E: Debug>`.
///
/// An `async fn` runs as the root actor (`test-root`) of the test's tree. A
/// plain `fn` runs on the test process's main thread outside any runtime:
/// sync code that starts its own root, e.g. a `furrow::blocking::Runtime`
/// on `furrow_testing::root_config()`.
///
/// - `#[furrow_testing::test(env = "NAME=value,OTHER=value")]` sets
///   environment variables for the test's process (and so for every actor
///   it spawns);
/// - `#[furrow_testing::test(scenario)]` registers a *scenario* instead: not
///   run as a test, but started by other tests as a separate root process
///   (`furrow_testing::scenario(name)`), e.g. to send it real signals. An
///   `async fn` scenario runs as `#[furrow::main]` would run it; a plain
///   `fn` one is a sync program (it starts its own runtime).
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (env, scenario) = match test_args(attr) {
        Ok(e) => e,
        Err(e) => return e.to_compile_error().into(),
    };
    let f = syn::parse_macro_input!(item as ItemFn);
    if !f.sig.inputs.is_empty() {
        return err(f.sig.ident.span(), "test functions take no arguments");
    }
    let ident = &f.sig.ident;
    let reg = format_ident!("__FURROW_TEST_{}", ident);
    let (keys, vals): (Vec<String>, Vec<String>) = env.into_iter().unzip();
    // An `async fn` runs as the root actor of the test's tree; a plain `fn`
    // runs on the test process's main thread, outside any runtime (sync
    // code, e.g. `furrow::blocking`).
    let body = if f.sig.asyncness.is_some() {
        quote! {
            ::furrow_testing::__private::Body::Async(|| ::std::boxed::Box::pin(async {
                ::furrow_testing::__private::IntoTestResult::into_test_result(#ident().await)
            }))
        }
    } else {
        quote! {
            ::furrow_testing::__private::Body::Sync(|| {
                ::furrow_testing::__private::IntoTestResult::into_test_result(#ident())
            })
        }
    };
    quote! {
        #f

        #[::furrow_testing::__private::linkme::distributed_slice(::furrow_testing::__private::TESTS)]
        #[linkme(crate = ::furrow_testing::__private::linkme)]
        #[allow(non_upper_case_globals)]
        static #reg: ::furrow_testing::__private::TestCase = ::furrow_testing::__private::TestCase {
            name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)),
            env: &[#((#keys, #vals)),*],
            scenario: #scenario,
            run: #body,
        };
    }
    .into()
}

fn test_args(attr: TokenStream) -> Result<(Vec<(String, String)>, bool), syn::Error> {
    if attr.is_empty() {
        return Ok((Vec::new(), false));
    }
    let metas = Punctuated::<syn::Meta, Token![,]>::parse_terminated.parse(attr)?;
    let mut out = Vec::new();
    let mut scenario = false;
    for m in metas {
        match m {
            syn::Meta::Path(p) if p.is_ident("scenario") => scenario = true,
            syn::Meta::NameValue(nv) if nv.path.is_ident("env") => {
                let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value else {
                    return Err(syn::Error::new_spanned(&nv.value, "expected a string"));
                };
                for pair in s.value().split(',').filter(|p| !p.trim().is_empty()) {
                    let Some((k, v)) = pair.split_once('=') else {
                        return Err(syn::Error::new_spanned(s, "expected NAME=value pairs separated by commas"));
                    };
                    out.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            other => {
                return Err(syn::Error::new_spanned(other, "expected `env = \"NAME=value\"` or `scenario`"));
            }
        }
    }
    Ok((out, scenario))
}
