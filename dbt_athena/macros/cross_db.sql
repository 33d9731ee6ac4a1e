{#- Small cross-database helpers: DuckDB locally, Athena (Trino) in production. -#}

{#- The value of a map entry, or null when the key is absent. -#}
{% macro map_value(column, key) -%}
  {{ return(adapter.dispatch('map_value', 'nova_eval')(column, key)) }}
{%- endmacro %}

{% macro default__map_value(column, key) -%}
  element_at({{ column }}, {{ key }})
{%- endmacro %}

{% macro duckdb__map_value(column, key) -%}
  {{ column }}[{{ key }}]
{%- endmacro %}


{#- SELECT the columns `keep` of `relation` with one row per entry of the map `column`,
    its key as `key_name` and its value as `value_name` (rows with an empty map vanish). -#}
{% macro unnest_map(relation, column, key_name, value_name, keep) -%}
  {{ return(adapter.dispatch('unnest_map', 'nova_eval')(relation, column, key_name, value_name, keep)) }}
{%- endmacro %}

{% macro default__unnest_map(relation, column, key_name, value_name, keep) -%}
  select
    {%- for col in keep %}
    t.{{ col }},
    {%- endfor %}
    u.{{ key_name }},
    u.{{ value_name }}
  from {{ relation }} as t
  cross join unnest(t.{{ column }}) as u ({{ key_name }}, {{ value_name }})
{%- endmacro %}

{% macro duckdb__unnest_map(relation, column, key_name, value_name, keep) -%}
  select
    {%- for col in keep %}
    {{ col }},
    {%- endfor %}
    unnest(map_keys({{ column }})) as {{ key_name }},
    unnest(map_values({{ column }})) as {{ value_name }}
  from {{ relation }}
{%- endmacro %}


{#- A string literal of a dbt var. -#}
{% macro var_literal(name) -%}
  '{{ var(name) | replace("'", "''") }}'
{%- endmacro %}
